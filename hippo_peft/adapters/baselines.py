"""The baselines: nothing is injected; each config fixes which existing parts train (``train_extra``)."""
from __future__ import annotations

from hippo_peft.adapters.config import CNNOnlyConfig, DecoderOnlyConfig, HeadOnlyConfig
from hippo_peft.adapters.registry import MethodSpec


def inject_nothing(model, config) -> None:
    """Only what ``config.train_extra`` unfreezes trains (done by ``adapters.model.inject``)."""


SPECS = (
    MethodSpec("headonly", HeadOnlyConfig, "head only", "HeadOnly", injector=inject_nothing, baseline=True,
               summary="Only the segmentation head trains."),
    MethodSpec("decoderonly", DecoderOnlyConfig, "decoder only", "DecoderOnly", injector=inject_nothing,
               baseline=True,
               summary="Exactly the decoder set of the default adapter trainers trains (CNN decoder blocks + head), "
                       "no adapter: against it, 'adapter + decoder' measures what the adapter adds."),
    MethodSpec("cnnonly", CNNOnlyConfig, "CNN only", "CNNOnly", injector=inject_nothing, baseline=True,
               in_default_benchmark=False,
               summary="Every CNN part trains (skip encoders, decoder blocks, head); the transformer stays frozen."),
)
