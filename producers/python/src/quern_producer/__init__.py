"""quern_producer: enqueue Quern ingestion jobs on RabbitMQ from Python.

    from quern_producer import Producer

    with Producer("amqp://guest:guest@127.0.0.1:5672/%2f") as producer:
        job_id = producer.enqueue("articles", "2024/launch.md", text, metadata={"lang": "en"})

:class:`Producer` blocks (and may be shared by threads); :class:`AsyncProducer` is its asyncio twin. Both
validate jobs against contract v1 (:func:`validate_job`) before sending anything, and return once RabbitMQ has
confirmed the jobs.
"""

from .aio import AsyncProducer
from .contract import (
    COLLECTION_MAX_CHARS,
    CONTRACT_VERSION,
    DOCUMENT_ID_MAX_CHARS,
    Job,
    new_job_id,
    validate_job,
)
from .cutover import cutover_bucket, goes_to_quern
from .errors import BrokerError, InvalidJob, QuernError
from .producer import Producer
from .topology import Topology

__version__ = "0.1.0"

__all__ = [
    "AsyncProducer",
    "BrokerError",
    "COLLECTION_MAX_CHARS",
    "CONTRACT_VERSION",
    "DOCUMENT_ID_MAX_CHARS",
    "InvalidJob",
    "Job",
    "Producer",
    "QuernError",
    "Topology",
    "cutover_bucket",
    "goes_to_quern",
    "new_job_id",
    "validate_job",
]
