"""SSV2A's three networks (Manifold, Generator, Remixer), built from its config (ssv2a.json).

Our own implementation of "Gotta Hear Them All: Sound Source Aware Vision to Audio Generation"
(arXiv 2411.15447). Parameter names and shapes follow the official checkpoint exactly, so ssv2a.pth loads
strictly: the Sequential indices below skip numbers because parameter-free modules (GELU, Dropout) take an
index too.

    clip [768] --clip_encoder--> fold [manifold_dim] --generator--> clap [512]
    clap [512] --clap_encoder--> fold [manifold_dim]
    slots [B, 64, manifold_dim + 768] --remixer.styler--> remix clap [B, 512]

Every network is variational: it returns (mu, log_sigma) and a draw is mu + exp(0.5 * log_sigma) * eps
(log_sigma is a log-variance, as in the original). Only the released architecture choices are built
(manifold/generator arch 'mlp', styler arch 'transformer', guidance 'manifold', variational everywhere);
any other config value raises a ValueError naming the field.
"""
import math

import torch
import torch.nn as nn

# -----------------------------------------------------------------------------
# Gaussian sampling


def gaussian_noise(shape, generator=None, device=None):
    """Standard normal noise [shape], float32, on `device`.

    Drawn on the generator's device (the CPU when generator is None, from torch's global CPU RNG) and then
    moved, so one seed gives the same noise whatever device the model runs on.
    """
    noise_device = generator.device if generator is not None else torch.device("cpu")
    eps = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
    return eps.to(device) if device is not None else eps


def draw(mu, log_sigma, generator=None):
    """One draw of N(mu, exp(log_sigma)): mu + exp(0.5 * log_sigma) * eps."""
    return mu + torch.exp(0.5 * log_sigma) * gaussian_noise(mu.shape, generator, mu.device)


def mean_of_draws(mu, log_sigma, var_samples=1, generator=None):
    """The mean of `var_samples` independent draws of N(mu, exp(log_sigma)).

    The original loops over var_samples draws and averages them; that mean is itself Gaussian with the
    std divided by sqrt(var_samples), so we draw it once: the same distribution for 1/var_samples of the
    noise (tests/test_model_ssv2a.py checks the two agree).
    """
    if var_samples < 1:
        raise ValueError(f"var_samples must be >= 1, got {var_samples}")
    std = torch.exp(0.5 * log_sigma) / math.sqrt(var_samples)
    return mu + std * gaussian_noise(mu.shape, generator, mu.device)


def l2_normalize(x):
    # plain division like the original (no epsilon): every vector normalised here is a Gaussian draw
    return x / x.norm(p=2, dim=-1, keepdim=True)


# -----------------------------------------------------------------------------
# building blocks


def _dropout(p):
    return [nn.Dropout(p)] if p else []


class Residual(nn.Module):
    """proj(x) + mod(x): the residual block of MLP (keys 'mod', 'proj')."""

    def __init__(self, mod, proj):
        super().__init__()
        self.mod = mod
        self.proj = proj

    def forward(self, x):
        return self.proj(x) + self.mod(x)


class MLP(nn.Module):
    """GELU MLP over the widths in `layers`.

    With resnet (and more than two widths) the consecutive triples (a, b, c) = layers[2i : 2i+3] become
    Residual blocks, Linear(a, c) + [Linear(a, b), LayerNorm, Dropout, GELU, Linear(b, c), LayerNorm, Dropout],
    each followed by a GELU; the widths left after the last full triple become plain
    [Linear, LayerNorm, Dropout, GELU] stages. dropout == 0 leaves the Dropout modules out entirely (and so
    shifts the Sequential indices), as the original does.
    """

    def __init__(self, layers, resnet=False, dropout=0.1):
        super().__init__()
        layers = list(layers)
        n_blocks = (len(layers) - 1) // 2 if resnet and len(layers) > 2 else 0
        stages = []
        for i in range(n_blocks):
            a, b, c = layers[2 * i:2 * i + 3]
            mod = nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b), *_dropout(dropout), nn.GELU(),
                                nn.Linear(b, c), nn.LayerNorm(c), *_dropout(dropout))
            stages += [Residual(mod, nn.Linear(a, c)), nn.GELU()]
        rest = layers[2 * n_blocks:]
        for a, b in zip(rest[:-1], rest[1:]):
            stages += [nn.Linear(a, b), nn.LayerNorm(b), *_dropout(dropout), nn.GELU()]
        self.model = nn.Sequential(*stages)

    def forward(self, x):
        return self.model(x)


class VariationalMLP(nn.Module):
    """Linear in-projection, MLP, then two Gaussian heads: x -> (mu, log_sigma)."""

    def __init__(self, in_dim, out_dim, layers, resnet, dropout, in_bias):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(in_dim, layers[0], bias=in_bias),
                                   MLP(layers, resnet=resnet, dropout=dropout))
        self.out_mu = nn.Linear(layers[-1], out_dim)
        self.out_sigma = nn.Linear(layers[-1], out_dim)

    def forward(self, x):
        h = self.model(x)
        return self.out_mu(h), self.out_sigma(h)


# -----------------------------------------------------------------------------
# Manifold and Generator


class Manifold(nn.Module):
    """The shared CLIP/CLAP manifold: clip_encoder folds CLIP embeddings, clap_encoder folds CLAP embeddings."""

    def __init__(self, clip_dim, clap_dim, manifold_dim, layers, resnet=True, dropout=0.2):
        super().__init__()
        # contrastive temperatures: only used in training, but part of the checkpoint
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.self_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # encoders' in-projections have no bias (the generator's has one): as in the checkpoint
        self.clip_encoder = VariationalMLP(clip_dim, manifold_dim, layers, resnet, dropout, in_bias=False)
        self.clap_encoder = VariationalMLP(clap_dim, manifold_dim, layers, resnet, dropout, in_bias=False)


class Generator(VariationalMLP):
    """Manifold code -> CLAP embedding, (mu, log_sigma) over clap_dim."""

    def __init__(self, manifold_dim, clap_dim, layers, resnet=True, dropout=0.2):
        super().__init__(manifold_dim, clap_dim, layers, resnet, dropout, in_bias=True)


# -----------------------------------------------------------------------------
# Remixer: a transformer over the slots with efficient attention


class EfficientSelfAttention(nn.Module):
    """Linear-cost attention (MotionDiffuse style) with a highway connection.

    Per head, queries and keys are each softmaxed over the head's feature axis; the keys and values of all
    tokens are summed into one context matrix, which every query reads. The output is highway(x) + that, x
    un-normalised. Summing over tokens makes the layer blind to the slot order.
    """

    def __init__(self, embed_dim, nhead, dropout):
        super().__init__()
        if embed_dim % nhead:
            raise ValueError(f"styler embed_dim {embed_dim} is not divisible by nhead {nhead}")
        self.nhead = nhead
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)
        self.highway = nn.Linear(embed_dim, embed_dim)

    def forward(self, x):
        B, T, D = x.shape
        h = self.norm(x)
        q = self.query(h).view(B, T, self.nhead, -1).softmax(dim=-1)
        k = self.key(h).view(B, T, self.nhead, -1).softmax(dim=-1)
        v = self.value(h).view(B, T, self.nhead, -1)
        context = self.dropout(torch.einsum("bthd,bthe->bhde", k, v))   # [B, H, D/H, D/H]
        y = torch.einsum("bthd,bhde->bthe", q, context).reshape(B, T, D)
        return self.highway(x) + y


class FeedForward(nn.Module):
    """Pre-norm GELU feed-forward with a residual connection."""

    def __init__(self, embed_dim, hidden_dim, dropout):
        super().__init__()
        self.linear1 = nn.Linear(embed_dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, embed_dim)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return x + self.linear2(self.dropout(self.activation(self.linear1(self.norm(x)))))


class StyleLayer(nn.Module):
    def __init__(self, embed_dim, nhead, dropout):
        super().__init__()
        self.esa = EfficientSelfAttention(embed_dim, nhead, dropout)
        self.ffn = FeedForward(embed_dim, embed_dim, dropout)

    def forward(self, x):
        return self.ffn(self.esa(x))


class StyleEncoder(nn.Module):
    def __init__(self, embed_dim, num_layers, nhead, dropout):
        super().__init__()
        self.encoder = nn.Sequential(*[StyleLayer(embed_dim, nhead, dropout) for _ in range(num_layers)])

    def forward(self, x):
        return self.encoder(x)


class Styler(nn.Module):
    """Slots (manifold code ++ CLIP embedding) -> one remixed CLAP, (mu, log_sigma).

    Two learned prediction tokens go in front of the projected slots; after the encoder, token 0 feeds the
    mu head and token 1 the log_sigma head. There is no positional embedding: the slots are a set.
    """

    def __init__(self, clip_dim, manifold_dim, clap_dim, embed_dim, num_layers, nhead, dropout):
        super().__init__()
        self.pred_token = nn.Parameter(torch.randn(2, embed_dim))
        self.in_proj = nn.Linear(manifold_dim + clip_dim, embed_dim)
        self.style_encoder = StyleEncoder(embed_dim, num_layers, nhead, dropout)
        self.head_mu = MLP([embed_dim, embed_dim], dropout=dropout)
        self.head_sigma = MLP([embed_dim, embed_dim], dropout=dropout)
        self.out_mu = nn.Linear(embed_dim, clap_dim)
        self.out_sigma = nn.Linear(embed_dim, clap_dim)

    def forward(self, src, src_clips):
        """src [B, slot, manifold_dim], src_clips [B, slot, clip_dim] -> mu, log_sigma [B, clap_dim]."""
        x = self.in_proj(torch.cat([src, src_clips], dim=-1))
        x = torch.cat([self.pred_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.style_encoder(x)
        return self.out_mu(self.head_mu(x[:, 0])), self.out_sigma(self.head_sigma(x[:, 1]))


class Remixer(nn.Module):
    def __init__(self, clip_dim, manifold_dim, clap_dim, embed_dim, num_layers, nhead, dropout):
        super().__init__()
        self.styler = Styler(clip_dim, manifold_dim, clap_dim, embed_dim, num_layers, nhead, dropout)

    def forward(self, src, src_clips):
        return self.styler(src, src_clips)


# -----------------------------------------------------------------------------
# from the config


def _require(config, path, expected):
    value = config
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"SSV2A config has no field '{path}'")
        value = value[key]
    if expected is not None and value != expected:
        raise ValueError(f"SSV2A config field '{path}' is {value!r}; only {expected!r} (the released "
                         "architecture) is implemented")
    return value


def build_networks(config):
    """(Manifold, Generator, Remixer) for an SSV2A config dict (the schema of ssv2a.json)."""
    for path, expected in [("manifold.arch", "mlp"), ("manifold.variational", True),
                           ("generator.arch", "mlp"), ("generator.variational", True),
                           ("generator.disabled", False), ("remixer.guidance", "manifold"),
                           ("remixer.styler.arch", "transformer"), ("remixer.styler.variational", True)]:
        _require(config, path, expected)
    clip_dim, clap_dim, manifold_dim = (int(_require(config, k, None)) for k in ("clip_dim", "clap_dim", "manifold_dim"))
    m, g, s = config["manifold"], config["generator"], config["remixer"]["styler"]
    manifold = Manifold(clip_dim, clap_dim, manifold_dim, m["layers"], m.get("resnet", False), m["dropout"])
    generator = Generator(manifold_dim, clap_dim, g["layers"], g.get("resnet", False), g["dropout"])
    remixer = Remixer(clip_dim, manifold_dim, clap_dim, s["embed_dim"], s["num_layers"], s["nhead"], s["dropout"])
    return manifold, generator, remixer
