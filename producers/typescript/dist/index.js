// @quern/producer: enqueue Quern ingestion jobs on RabbitMQ from Node.js. The public API, re-exported from
// the modules that implement it.
export { Producer, BrokerError, redactUrl, } from './producer.js';
export { validateJob, codePoints, InvalidJobError, CONTRACT_VERSION, COLLECTION_MAX_CHARS, DOCUMENT_ID_MAX_CHARS, JOB_ID_PATTERN, JOB_OPS, } from './job.js';
export { cutoverBucket, goesToQuern, CUTOVER_BUCKETS, } from './cutover.js';
export { newJobId, jobIdTime, isTraceparent, newTraceparent } from './ids.js';
export { topology, declareTopology, ingestQueueArguments, deadQueueArguments, DEFAULT_QUEUE_PREFIX, DELIVERY_LIMIT, INGEST_ROUTING_KEY, } from './topology.js';
