// An Express web tier that enqueues Quern ingestion jobs: POST /documents {collection, documentId, text,
// metadata?} answers 202 {jobId} once RabbitMQ has confirmed the job, 422 for input the contract refuses,
// 503 when the broker cannot take it (the client may retry). One producer for the whole process.
//
//   QUERN_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f PORT=3000 node examples/express-app.mjs
//   curl -i -X POST localhost:3000/documents -H 'content-type: application/json' \
//        -d '{"collection":"articles","documentId":"2024/launch.md","text":"We launched."}'

import { fileURLToPath } from 'node:url';

import express from 'express';

import { BrokerError, InvalidJobError, Producer } from '@quern/producer';

/** The app, given a connected producer (tests pass their own). */
export function createApp(producer) {
  const app = express();
  app.use(express.json({ limit: '16mb' }));

  app.post('/documents', async (req, res, next) => {
    const { collection, documentId, text, metadata } = req.body ?? {};
    try {
      // The caller's traceparent header, if any, makes the worker's processing part of the request's trace.
      const jobId = await producer.enqueue(
        { collection, documentId, text, metadata },
        { traceparent: req.get('traceparent') },
      );
      res.status(202).json({ jobId });
    } catch (error) {
      next(error);
    }
  });

  app.delete('/documents/:collection/:documentId', async (req, res, next) => {
    try {
      const jobId = await producer.delete({ collection: req.params.collection, documentId: req.params.documentId });
      res.status(202).json({ jobId });
    } catch (error) {
      next(error);
    }
  });

  // Errors to statuses: the caller's fault is 422 (naming the field), the broker's is 503 (try again later).
  app.use((error, req, res, next) => {
    if (error instanceof InvalidJobError) {
      res.status(422).json({ error: error.message, field: error.field });
    } else if (error?.type === 'entity.parse.failed') {
      res.status(422).json({ error: `the body is not valid JSON: ${error.message}`, field: null });
    } else if (error instanceof BrokerError) {
      res
        .status(503)
        .set('Retry-After', '5')
        .json({ error: 'the job queue is unavailable, try again', code: error.code });
    } else {
      next(error);
    }
  });
  return app;
}

async function main() {
  const producer = await Producer.connect(process.env.QUERN_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/%2f', {
    queuePrefix: process.env.QUERN_QUEUE_PREFIX ?? 'quern',
  });
  const server = createApp(producer).listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
    // Tests and scripts wait for this line (PORT=0 picks a free port).
    console.log(`listening on http://127.0.0.1:${server.address().port}`);
  });
  // On SIGTERM: stop taking requests, let the enqueues in flight get their confirms, then close the producer.
  process.once('SIGTERM', () => {
    server.close(() => producer.close().then(() => process.exit(0)));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
