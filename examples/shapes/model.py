"""A small text-conditional generator of shapes, trained from scratch and then reward fine-tuned.

The generator is the decoder of a conditional VAE (Kingma & Welling 2014; Sohn et al. 2015):
``image = decoder(z, prompt)`` with ``z ~ N(0, I)``. The latent code carries what the prompt leaves
open (position, size, shade), so different seeds give different pictures.

Training has two phases in one run, so that one set of curves shows both:

1. ``pretrain_steps`` of the VAE objective on the procedural data (reconstruction + KL);
2. ``finetune_steps`` of reward fine-tuning of the decoder, by backpropagating a differentiable
   reward through the samples (as DRaFT / ReFL do for diffusion models). The reward prefers one
   look per prompt (centred, mid-size, full brightness): it is the negative squared distance of a
   sample to that look. Nothing in it rewards variety, so the decoder learns to ignore ``z``: the
   reward loss improves while the diversity of the samples collapses.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shapes.data import (
    COLOURS,
    PROMPTS,
    SHAPES,
    canonical_images,
    check_one_generator_per_prompt,
    prompt_indices,
)


class PromptEncoder(nn.Module):
    """Learned embedding of a prompt: the sum of its colour word's and shape word's vectors."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.colour = nn.Embedding(len(COLOURS), dim)
        self.shape = nn.Embedding(len(SHAPES), dim)

    def forward(self, prompt_index: Tensor) -> Tensor:
        """Embed (N,) indices into ``PROMPTS`` as (N, dim)."""
        return self.colour(prompt_index // len(SHAPES)) + self.shape(prompt_index % len(SHAPES))


class Encoder(nn.Module):
    """q(z | image, prompt): a conv net to the mean and log-variance of a Gaussian."""

    def __init__(self, latent_dim: int, cond_dim: int, width: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),  # 16 x 16
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 8 x 8
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1),  # 4 x 4
            nn.SiLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 16 + cond_dim, 2 * latent_dim)

    def forward(self, images: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.head(torch.cat([self.convs(images), cond], dim=1)).chunk(2, dim=1)
        return mean, log_var


class Decoder(nn.Module):
    """p(image | z, prompt): a transposed-conv net to (N, 3, 32, 32) images in [0, 1]."""

    def __init__(self, latent_dim: int, cond_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Sequential(nn.Linear(latent_dim + cond_dim, 2 * width * 16), nn.SiLU())
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(2 * width, 2 * width, 4, stride=2, padding=1),  # 8 x 8
            nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 16 x 16
            nn.SiLU(),
            nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1),  # 32 x 32
        )

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        """Logits of the pixel intensities; :meth:`ShapesVAE.decode` applies the sigmoid."""
        hidden = self.stem(torch.cat([z, cond], dim=1)).view(-1, 2 * self.width, 4, 4)
        return self.deconvs(hidden)


class ShapesVAE(L.LightningModule):
    """Conditional VAE on the shapes data, then reward fine-tuning of its decoder.

    Args:
        pretrain_steps: optimizer steps of the VAE objective.
        latent_dim: size of the noise ``z``.
        width: channels of the first conv layer.
        lr: Adam learning rate of pre-training.
        finetune_lr: Adam learning rate of reward fine-tuning (a fresh optimizer).
        beta: weight of the KL term.
    """

    def __init__(
        self,
        pretrain_steps: int,
        latent_dim: int = 8,
        width: int = 16,
        lr: float = 2e-3,
        finetune_lr: float = 1e-4,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Two phases with two optimizers, one stepped per batch: optimised by hand.
        self.automatic_optimization = False
        cond_dim = 16
        self.prompt_encoder = PromptEncoder(cond_dim)
        self.encoder = Encoder(latent_dim, cond_dim, width)
        self.decoder = Decoder(latent_dim, cond_dim, width)
        self.register_buffer("preferred", canonical_images(PROMPTS), persistent=False)

    @property
    def finetuning(self) -> bool:
        """Whether the current step is a reward fine-tuning step."""
        return self.global_step >= self.hparams.pretrain_steps

    def decode(self, z: Tensor, prompt_index: Tensor) -> Tensor:
        """Images in [0, 1] for (N, latent_dim) codes and (N,) indices into ``PROMPTS``."""
        return torch.sigmoid(self.decoder(z, self.prompt_encoder(prompt_index)))

    @torch.no_grad()
    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> Tensor:
        """Sample one image per prompt, each from its own seeded generator (the callback's contract).

        Returns:
            (N, 3, 32, 32) images in [0, 1].
        """
        check_one_generator_per_prompt(prompts, generators)
        z = torch.stack(
            [
                torch.randn(self.hparams.latent_dim, generator=g, device=self.device)
                for g in generators
            ]
        )
        return self.decode(z, prompt_indices(prompts, self.device))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, prompt_index = batch
        vae_optimizer, reward_optimizer = self.optimizers()
        if self.finetuning:
            optimizer, loss = reward_optimizer, self._reward_loss(prompt_index)
            self._log_loss("train/reward_loss", loss)
        else:
            optimizer, loss = vae_optimizer, self._vae_loss(images, prompt_index)
            self._log_loss("train/vae_loss", loss)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def _log_loss(self, name: str, loss: Tensor) -> None:
        """Show the loss in the progress bar; send rank 0's to the loggers every few steps.

        ``self.log`` would re-send the last VAE loss at every logging step until the epoch ends,
        drawing it into the fine-tuning phase: each loss goes to the loggers at its own step.
        """
        self.log(name, loss, prog_bar=True, logger=False)
        step = self.global_step  # this batch's optimizer step has not happened yet
        if self.trainer.is_global_zero and step % self.trainer.log_every_n_steps == 0:
            for logger in self.loggers:
                logger.log_metrics({name: loss.detach().item()}, step=step)

    def _vae_loss(self, images: Tensor, prompt_index: Tensor) -> Tensor:
        """Negative ELBO per image, in nats: Bernoulli reconstruction + beta * KL."""
        cond = self.prompt_encoder(prompt_index)
        mean, log_var = self.encoder(images, cond)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        logits = self.decoder(z, cond)
        reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mean**2 - log_var.exp())
        return (reconstruction + self.hparams.beta * kl) / images.shape[0]

    def _reward_loss(self, prompt_index: Tensor) -> Tensor:
        """Negative reward of fresh samples: mean squared distance to the preferred look."""
        z = torch.randn(prompt_index.shape[0], self.hparams.latent_dim, device=self.device)
        samples = self.decode(z, prompt_index)
        return F.mse_loss(samples, self.preferred[prompt_index])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # Fine-tuning gets its own Adam: the pre-training one's second-moment estimates are
        # scaled to the much larger VAE gradients and would stall the reward updates for
        # thousands of steps. Fine-tuning moves the decoder and the prompt embeddings only.
        vae = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        reward = torch.optim.Adam(
            [*self.decoder.parameters(), *self.prompt_encoder.parameters()],
            lr=self.hparams.finetune_lr,
        )
        return [vae, reward]
