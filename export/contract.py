"""The names and shapes other teams rely on (see ENGINEERING.md, "Contracts")."""

from __future__ import annotations

ENCODER = "vae_encoder"
DECODER = "vae_decoder"
NETWORKS = (ENCODER, DECODER)
SIGNATURE = "serving_default"
IMAGE_SHAPE = (28, 28, 1)

INPUTS = {ENCODER: "images", DECODER: "z"}
OUTPUTS = {ENCODER: ("z_mean", "z_log_var"), DECODER: ("probs", "logits")}


def input_shape(network: str, latent_dim: int) -> list[int | None]:
    """Input shape with a dynamic (None) batch dimension."""
    return [None, *IMAGE_SHAPE] if network == ENCODER else [None, latent_dim]


def output_shapes(network: str, latent_dim: int) -> dict[str, list[int | None]]:
    if network == ENCODER:
        return {name: [None, latent_dim] for name in OUTPUTS[ENCODER]}
    return {name: [None, *IMAGE_SHAPE] for name in OUTPUTS[DECODER]}
