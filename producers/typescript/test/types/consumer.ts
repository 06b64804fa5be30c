// Compiled (never run) by test/build.test.mjs with `tsc --noEmit`: code an application would write against
// the published declarations, resolved by package name as an installing project resolves them. The lines
// marked as expected errors prove the types refuse what the contract refuses.

import {
  BrokerError,
  InvalidJobError,
  Producer,
  cutoverBucket,
  goesToQuern,
  validateJob,
  type JobBody,
  type JobInput,
  type LegacyJob,
} from '@quern/producer';

export async function usage(): Promise<string[]> {
  const producer = await Producer.connect('amqp://guest:guest@127.0.0.1:5672/%2f', { queuePrefix: 'quern' });
  const jobId: string = await producer.enqueue({ collection: 'articles', documentId: 'a.md', text: 'hello' });
  await producer.enqueue(
    { collection: 'articles', documentId: 'a.md', text: 'hi', metadata: { lang: 'en', tags: ['x'], n: null } },
    { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
  );
  await producer.delete({ collection: 'articles', documentId: 'a.md' });
  const jobs: JobInput[] = [
    { collection: 'c', documentId: 'd', text: 't', jobId },
    { collection: 'c', documentId: 'e', op: 'delete' },
  ];
  const ids: string[] = await producer.enqueueMany(jobs);
  try {
    await producer.enqueue({ collection: 'c', documentId: 'd', text: 't' });
  } catch (error) {
    if (error instanceof InvalidJobError) console.log(error.field, error.reason);
    if (error instanceof BrokerError) console.log(error.code, error.unconfirmedJobIds);
  }
  const body: JobBody = validateJob(JSON.parse('{}'));
  console.log(body.job_id, producer.topology.ingestQueue);

  // @ts-expect-error text is required for an upsert
  await producer.enqueue({ collection: 'c', documentId: 'd' });
  // @ts-expect-error op is upsert or delete
  await producer.enqueue({ collection: 'c', documentId: 'd', text: 't', op: 'merge' });
  // @ts-expect-error metadata is a JSON object
  await producer.enqueue({ collection: 'c', documentId: 'd', text: 't', metadata: ['a'] });
  // @ts-expect-error documentId, not document_id
  await producer.enqueue({ collection: 'c', document_id: 'd', text: 't' });
  await producer.close();
  return ids;
}

/** A legacy path's handle, as a Celery client or a Node queue might return one. */
interface TaskHandle {
  taskId: string;
}

export async function cutover(send: (job: LegacyJob) => Promise<TaskHandle>): Promise<void> {
  const producer = await Producer.connect('amqp://guest:guest@127.0.0.1:5672/%2f', {
    cutoverPercent: 30,
    legacy: send,
    legacyDelete: ({ collection, documentId }) => `${collection}/${documentId} deleted`,
  });
  // A job id, or what the legacy function resolved to.
  const result: string | TaskHandle = await producer.enqueue({ collection: 'c', documentId: 'd', text: 't' });
  const deleted: string = await producer.delete({ collection: 'c', documentId: 'd' });
  const many: (string | TaskHandle)[] = await producer.enqueueMany([{ collection: 'c', documentId: 'd', text: 't' }]);
  producer.setCutoverPercent(50);
  const percent: number = producer.cutoverPercent;
  const moved: boolean = goesToQuern('c', 'd', 50) && !goesToQuern('c', 'd', 30);
  const bucket: number = cutoverBucket('c', 'd');
  console.log(result, deleted, many, percent, moved, bucket);

  // @ts-expect-error with a legacy path, enqueue may resolve to its result rather than a job id
  const notOnlyIds: string = await producer.enqueue({ collection: 'c', documentId: 'd', text: 't' });
  // @ts-expect-error the legacy function takes one job object, not positional arguments
  await Producer.connect('amqp://x', { cutoverPercent: 0, legacy: (collection: string, text: string) => 1 });
  // @ts-expect-error cutoverPercent is a number
  await Producer.connect('amqp://x', { cutoverPercent: '30' });
  // @ts-expect-error the percentage is changed with setCutoverPercent
  producer.cutoverPercent = 0;
  console.log(notOnlyIds);
}
