"""capstan-stage: run a Python script as a Capstan pipeline stage (stage protocol v1).

    from capstan_stage import open_stage

    with open_stage() as ctx:
        data = ctx.inputs["dataset"]          # a local folder
        ...
        ctx.epoch(1, epochs=10, trainLoss=0.3)
        model_dir = ctx.output_dir("model")   # write it, then ctx.output("model", format="keras")

Standard library only. ``capstan_stage.datasets`` and ``capstan_stage.tfjs`` (numpy) and
``capstan_stage.keras`` (keras) import their library when used.
"""
from .context import Checkpoint, StageContext, UnsupportedProtocol, open_stage
from .errors import ArtifactError, BadInput, StageError
from .protocol import PROTOCOL_VERSION, SDK, SDK_VERSION

__version__ = SDK_VERSION
__all__ = ["open_stage", "StageContext", "Checkpoint", "StageError", "BadInput", "ArtifactError", "UnsupportedProtocol", "PROTOCOL_VERSION", "SDK", "__version__"]
