"""twistd plugin: ``twistd -n s3orchestrator --config FILE``."""

from twisted.application.service import ServiceMaker

s3orchestrator = ServiceMaker(
    "s3orchestrator",
    "s3orchestrator.tap",
    "One S3-compatible endpoint over many upstream object stores.",
    "s3orchestrator",
)
