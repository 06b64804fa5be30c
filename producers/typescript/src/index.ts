// @quern/producer: enqueue Quern ingestion jobs on RabbitMQ from Node.js. The public API, re-exported from
// the modules that implement it.

export {
  Producer,
  BrokerError,
  redactUrl,
  type BrokerErrorCode,
  type EnqueueOptions,
  type ProducerOptions,
} from './producer.js';
export {
  validateJob,
  codePoints,
  InvalidJobError,
  CONTRACT_VERSION,
  COLLECTION_MAX_CHARS,
  DOCUMENT_ID_MAX_CHARS,
  JOB_ID_PATTERN,
  JOB_OPS,
  type DeleteInput,
  type JobBody,
  type JobInput,
  type JobInputBase,
  type JobOp,
  type JsonObject,
  type JsonValue,
  type UpsertInput,
} from './job.js';
export {
  cutoverBucket,
  goesToQuern,
  CUTOVER_BUCKETS,
  type LegacyDelete,
  type LegacyDocument,
  type LegacyEnqueue,
  type LegacyJob,
} from './cutover.js';
export { newJobId, jobIdTime, isTraceparent, newTraceparent } from './ids.js';
export {
  topology,
  declareTopology,
  ingestQueueArguments,
  deadQueueArguments,
  DEFAULT_QUEUE_PREFIX,
  DELIVERY_LIMIT,
  INGEST_ROUTING_KEY,
  type Topology,
} from './topology.js';
