'use strict'
// Karst's compatibility scenario with kafkajs (issue 11), against a running broker or cluster
// that has automatic topic creation turned off:
//
//  1. admin: cluster, create a topic with configs, describe it, alter and describe configs,
//     add partitions; an existing topic and a bad config;
//  2. produce keyed records with headers in every compression codec;
//  3. read them back by partition and check every record by offset; then in a consumer group:
//     a first member reads every record, commits the middle of each partition and leaves, the
//     admin lists and describes the group and fetches its offsets, and a second member
//     resumes exactly there, commits the end, and the group is deleted; the offsets the admin
//     lists;
//  4. a missing topic: describe, describe configs, delete and produce fail with
//     UNKNOWN_TOPIC_OR_PARTITION;
//  5. delete the topic, after which it is missing too.
//
// kafkajs has no assign(): its consumer always joins a group. The by-partition read of step 3
// uses kafkajs's own Fetch code (its Cluster and Broker classes, and the Batch class its
// consumer wraps every fetched partition in), so the bytes are decoded, decompressed and
// filtered exactly as its consumer would; the group step then uses its consumer.
//
// kafkajs ships gzip only; snappy comes from kafkajs-snappy, and lz4 and zstd from codecs
// written here over lz4js and @bokuweb/zstd-wasm (pure JavaScript and WebAssembly: nothing
// to compile or download at install time).
//
// Usage: node scenario.js --bootstrap HOST:PORT[,...] --brokers N --replication-factor R
// --topic-prefix NAME. Prints one line per step; exits 1 naming the failed step.

const { Kafka, AssignerProtocol, CompressionTypes, CompressionCodecs, ConfigResourceTypes, Partitioners, logLevel } = require('kafkajs')
const Batch = require('kafkajs/src/consumer/batch')
const SnappyCodec = require('kafkajs-snappy')
const lz4 = require('lz4js')
const xxh32 = require('lz4js/xxh32')
const zstd = require('@bokuweb/zstd-wasm')

// Every admin call, send and read loop is bounded by this.
const CALL_TIMEOUT_MS = 30000
// Metadata and configs reach every node of a cluster within this (eventual reads).
const PROPAGATION_TIMEOUT_MS = 20000

const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}
const RECORDS_PER_CODEC = 400
const PARTITIONS_CREATED = 3
const PARTITIONS_AFTER_GROWTH = 4

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
// lz4js writes frames without the block-independence flag, and Kafka refuses those ("Dependent
// block stream is unsupported"). A frame of a single block is independent whatever its flag
// says: for inputs up to lz4js's 4 MiB block, set the flag and recompute the header checksum.
const LZ4JS_BLOCK_BYTES_MAX = 4 << 20
function lz4IndependentFrame(data) {
  if (data.length > LZ4JS_BLOCK_BYTES_MAX) throw new Error(`lz4: ${data.length} bytes do not fit one block`)
  const frame = Buffer.from(lz4.compress(data))
  const flags = 4 // after the 4-byte magic: FLG, BD, header checksum
  frame[flags] |= 0x20
  frame[flags + 2] = (xxh32.hash(0, frame, flags, 2) >>> 8) & 0xff
  return frame
}
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: async encoder => lz4IndependentFrame(encoder.buffer),
  decompress: async buffer => Buffer.from(lz4.decompress(buffer)),
})
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async encoder => Buffer.from(zstd.compress(encoder.buffer, 3)),
  decompress: async buffer => Buffer.from(zstd.decompress(buffer)),
})

function parseOptions(argv) {
  const options = {}
  for (let i = 2; i + 1 < argv.length; i += 2) {
    options[argv[i].replace(/^--/, '')] = argv[i + 1]
  }
  for (const name of ['bootstrap', 'brokers', 'replication-factor', 'topic-prefix']) {
    if (options[name] === undefined) throw new Error(`missing option --${name}`)
  }
  return {
    brokers: options.bootstrap.split(','),
    brokerCount: Number(options.brokers),
    replicationFactor: Number(options['replication-factor']),
    topic: `${options['topic-prefix']}-codecs`,
    missing: `${options['topic-prefix']}-missing`,
    group: `${options['topic-prefix']}-group`,
  }
}

let checks = 0
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`)
  checks++
}

async function step(name, run) {
  const started = Date.now()
  const before = checks
  const value = await run()
  console.log(`ok  ${name.padEnd(45)} ${String(checks - before).padStart(4)} checks ${String(Date.now() - started).padStart(6)} ms`)
  return value
}

async function eventually(what, attempt) {
  const deadline = Date.now() + PROPAGATION_TIMEOUT_MS
  for (;;) {
    const value = await attempt()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${PROPAGATION_TIMEOUT_MS} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

// The Kafka error name behind a kafkajs error, looking through retries and aggregates.
function errorTypes(error) {
  const types = new Set()
  const visit = e => {
    if (!e) return
    if (e.type) types.add(e.type)
    visit(e.originalError)
    visit(e.cause)
    for (const inner of e.errors || []) visit(inner)
  }
  visit(error)
  return types
}

async function expectError(type, what, call) {
  let failure = null
  try {
    await call()
  } catch (error) {
    failure = error
  }
  check(failure !== null, `${what}: succeeded, want ${type}`)
  check(errorTypes(failure).has(type), `${what}: failed with ${failure} (${[...errorTypes(failure)]}), want ${type}`)
}

function expectedRecord(codec, index) {
  const index4 = Buffer.alloc(4)
  index4.writeUInt32BE(index)
  return {
    codec,
    index,
    key: Buffer.from(`key-${codec}-${index}`),
    value: index === 7 ? Buffer.alloc(0) : Buffer.from(`value ${codec} ${index} `.repeat(1 + (index % 5))),
    // kafkajs takes headers as an object: a repeated name is an array of values. It cannot
    // produce a null header value (its encoder throws), so unlike the other clients' scenarios
    // this one sends an empty value instead.
    headers: { codec: [Buffer.from(codec), Buffer.from('again')], index: index4, 'empty-valued': Buffer.alloc(0) },
    timestamp: String(Date.now()),
  }
}

function sameBytes(got, want) {
  if (want === null) return got === null
  return Buffer.isBuffer(got) && got.equals(want)
}

function checkRecord(where, message, want) {
  if (!sameBytes(message.key, want.key)) throw new Error(`${where}: key ${message.key}, want ${want.key}`)
  if (!sameBytes(message.value, want.value)) throw new Error(`${where}: value ${message.value}, want ${want.value}`)
  const names = Object.keys(message.headers)
  const wantNames = Object.keys(want.headers)
  const headersMatch = names.length === wantNames.length && wantNames.every(name => {
    const got = message.headers[name]
    const expected = want.headers[name]
    if (Array.isArray(expected)) {
      return Array.isArray(got) && got.length === expected.length && expected.every((value, i) => sameBytes(got[i], value))
    }
    return sameBytes(got, expected)
  })
  if (!headersMatch) throw new Error(`${where}: headers ${JSON.stringify(message.headers)}, want ${JSON.stringify(want.headers)}`)
  if (message.timestamp !== want.timestamp) throw new Error(`${where}: timestamp ${message.timestamp}, want ${want.timestamp}`)
}

async function topicConfigs(admin, topic) {
  const described = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    includeSynonyms: false,
  })
  const entries = {}
  for (const entry of described.resources[0].configEntries) entries[entry.configName] = entry
  return entries
}

// Describe, describe configs, delete and produce: each must fail with UNKNOWN_TOPIC_OR_PARTITION.
async function missingTopicErrors(kafka, admin, missing) {
  await expectError('UNKNOWN_TOPIC_OR_PARTITION', `describe ${missing}`,
    () => admin.fetchTopicMetadata({ topics: [missing] }))
  await expectError('UNKNOWN_TOPIC_OR_PARTITION', `describe configs of ${missing}`,
    () => topicConfigs(admin, missing))
  await expectError('UNKNOWN_TOPIC_OR_PARTITION', `delete ${missing}`,
    () => admin.deleteTopics({ topics: [missing], timeout: CALL_TIMEOUT_MS }))
  const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  try {
    await expectError('UNKNOWN_TOPIC_OR_PARTITION', `produce to ${missing}`,
      () => producer.send({ topic: missing, acks: -1, messages: [{ value: 'v' }] }))
  } finally {
    await producer.disconnect()
  }
  check(!(await admin.listTopics()).includes(missing), `${missing} still does not exist`)
}

// A group member that subscribes and checks every record it gets against what was produced,
// per partition from `start` (partition -> next offset) to the end; resolves, still a member,
// once it has them all.
async function readInGroup(kafka, group, topic, produced, start) {
  // A short fetch wait: disconnect() waits for the fetch in flight (kafkajs's default is 5 s).
  const consumer = kafka.consumer({ groupId: group, allowAutoTopicCreation: false, maxWaitTimeInMs: 500 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const next = new Map(start)
  let wanted = 0
  for (const [partition, offset] of start) wanted += produced.get(partition).size - Number(offset)
  let consumed = 0
  let finish, fail
  const done = new Promise((resolve, reject) => { finish = resolve; fail = reject })
  const timer = setTimeout(() => fail(new Error(`group ${group}: consumed ${consumed} of ${wanted} records`)), CALL_TIMEOUT_MS)
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      try {
        const where = `${topic}-${partition}@${message.offset}`
        if (!next.has(partition) || BigInt(message.offset) !== next.get(partition)) {
          throw new Error(`${where}: want offset ${next.get(partition)}`)
        }
        checkRecord(where, message, produced.get(partition).get(next.get(partition)))
        next.set(partition, next.get(partition) + 1n)
        checks++
        if (++consumed === wanted) finish()
      } catch (error) {
        fail(error)
      }
    },
  })
  try {
    await done
  } catch (error) {
    await consumer.disconnect()
    throw error
  } finally {
    clearTimeout(timer)
  }
  return consumer
}

async function describeGroup(admin, group) {
  const { groups } = await admin.describeGroups([group])
  check(groups.length === 1 && groups[0].errorCode === 0, `describe ${group}: ${JSON.stringify(groups)}`)
  return groups[0]
}

async function checkGroupOffsets(admin, group, topic, want) {
  const [fetched] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
  for (const [partition, offset] of want) {
    const got = fetched.partitions.find(p => p.partition === partition)
    check(got && got.offset === String(offset), `${group} committed ${JSON.stringify(got)} for partition ${partition}, want ${offset}`)
  }
}

async function groupCommitAndResume(kafka, admin, topic, group, produced) {
  const middle = new Map([...produced].map(([partition, records]) => [partition, BigInt(Math.floor(records.size / 2))]))
  const ends = new Map([...produced].map(([partition, records]) => [partition, BigInt(records.size)]))
  const asCommit = offsets => [...offsets].map(([partition, offset]) => ({ topic, partition, offset: String(offset) }))

  const first = await readInGroup(kafka, group, topic, produced, new Map([...produced.keys()].map(p => [p, 0n])))
  await first.commitOffsets(asCommit(middle))
  await first.disconnect() // leaves the group

  const { groups } = await admin.listGroups()
  const listed = groups.find(g => g.groupId === group)
  check(listed && listed.protocolType === 'consumer', `listGroups names ${group} a consumer group: ${JSON.stringify(groups)}`)
  const empty = await describeGroup(admin, group)
  check(empty.state === 'Empty', `${group} empty after its member left: ${empty.state}`)
  check(empty.members.length === 0, 'no members after disconnect')
  await checkGroupOffsets(admin, group, topic, middle)

  const second = await readInGroup(kafka, group, topic, produced, middle)
  try {
    await second.commitOffsets(asCommit(ends))
    const stable = await describeGroup(admin, group)
    check(stable.state === 'Stable', `${group} stable with its member: ${stable.state}`)
    check(stable.protocolType === 'consumer', `protocol type ${stable.protocolType}`)
    check(stable.members.length === 1, `one member: ${stable.members.length}`)
    const { assignment } = AssignerProtocol.MemberAssignment.decode(stable.members[0].memberAssignment)
    check(assignment[topic] && assignment[topic].length === PARTITIONS_AFTER_GROWTH,
      `the member has every partition: ${JSON.stringify(assignment)}`)
    await checkGroupOffsets(admin, group, topic, ends)
  } finally {
    await second.disconnect()
  }

  await admin.deleteGroups([group])
  check(!(await admin.listGroups()).groups.some(g => g.groupId === group), `${group} gone after deleteGroups`)
}

async function main() {
  const options = parseOptions(process.argv)
  const { topic, missing } = options
  await zstd.init()
  const kafka = new Kafka({
    clientId: 'karst-compat-kafkajs',
    brokers: options.brokers,
    requestTimeout: CALL_TIMEOUT_MS,
    // Few, short retries: the missing-topic errors are retriable, and each is expected.
    retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 },
    logLevel: logLevel.NOTHING,
  })
  const admin = kafka.admin()
  await admin.connect()
  try {
    await step('describe cluster', async () => {
      const cluster = await admin.describeCluster()
      check(cluster.brokers.length === options.brokerCount, `${cluster.brokers.length} brokers, want ${options.brokerCount}`)
      check(Boolean(cluster.clusterId), 'cluster id present')
      check(cluster.controller !== null && cluster.controller >= 0, 'a controller is named')
    })

    await step('create and describe topic', async () => {
      const created = await admin.createTopics({
        topics: [{
          topic,
          numPartitions: PARTITIONS_CREATED,
          replicationFactor: options.replicationFactor,
          configEntries: [{ name: 'retention.ms', value: '86400000' }, { name: 'cleanup.policy', value: 'delete' }],
        }],
        waitForLeaders: true,
        timeout: CALL_TIMEOUT_MS,
      })
      check(created === true, 'topic created')
      const described = await eventually(`${topic} with leaders`, async () => {
        const metadata = await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => null)
        const partitions = metadata && metadata.topics[0].partitions
        return partitions && partitions.length === PARTITIONS_CREATED && partitions.every(p => p.leader >= 0) ? metadata.topics[0] : null
      })
      for (const partition of described.partitions) {
        check(partition.replicas.length === options.replicationFactor, `partition ${partition.partitionId} has ${options.replicationFactor} replicas`)
      }
      // kafkajs answers false, not an error, for a topic that already exists.
      const again = await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: options.replicationFactor }] })
      check(again === false, 'create existing topic answers false (TOPIC_ALREADY_EXISTS)')
      await expectError('INVALID_CONFIG', 'create with retention.ms=not-a-number', () => admin.createTopics({
        topics: [{ topic: `${topic}-bad-config`, numPartitions: 1, replicationFactor: options.replicationFactor,
          configEntries: [{ name: 'retention.ms', value: 'not-a-number' }] }],
      }))
    })

    await step('alter and describe configs', async () => {
      let configs = await topicConfigs(admin, topic)
      check(configs['retention.ms'].configValue === '86400000', 'retention.ms as created')
      check(configs['retention.ms'].configSource === 1, 'retention.ms is a topic override (DYNAMIC_TOPIC_CONFIG)')
      // kafkajs speaks only AlterConfigs, which replaces the topic's whole set of overrides:
      // leaving retention.ms out removes it.
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{
          type: ConfigResourceTypes.TOPIC,
          name: topic,
          configEntries: [{ name: 'retention.bytes', value: '1073741824' }, { name: 'cleanup.policy', value: 'delete' }],
        }],
      })
      configs = await eventually(`altered configs of ${topic}`, async () => {
        const entries = await topicConfigs(admin, topic)
        return entries['retention.bytes'].configValue === '1073741824' && entries['retention.ms'].configSource !== 1 ? entries : null
      })
      check(configs['retention.bytes'].configSource === 1, 'retention.bytes is a topic override')
      check(configs['retention.ms'].configValue === '604800000', 'retention.ms back to 7 days')
      check(configs['cleanup.policy'].configValue === 'delete', 'cleanup.policy kept')
    })

    await step('create partitions', async () => {
      await admin.createPartitions({ topicPartitions: [{ topic, count: PARTITIONS_AFTER_GROWTH }], timeout: CALL_TIMEOUT_MS })
      await eventually(`${topic} with ${PARTITIONS_AFTER_GROWTH} partitions`, async () => {
        const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
        return metadata.topics[0].partitions.length === PARTITIONS_AFTER_GROWTH
      })
      checks++
    })

    // partition -> offset -> record
    const produced = new Map()
    await step('produce in every codec', async () => {
      const metadata = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions
      const partitioner = Partitioners.DefaultPartitioner()
      const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner })
      await producer.connect()
      try {
        for (const [codec, compression] of Object.entries(CODECS)) {
          const records = []
          for (let index = 0; index < RECORDS_PER_CODEC; index++) records.push(expectedRecord(codec, index))
          // kafkajs answers one base offset per partition: records of a partition get
          // consecutive offsets in the order sent, and the partition is the key's (the
          // producer runs the same partitioner on the same metadata).
          const byPartition = new Map()
          for (const record of records) {
            const partition = partitioner({ topic, partitionMetadata: metadata, message: record })
            if (!byPartition.has(partition)) byPartition.set(partition, [])
            byPartition.get(partition).push(record)
          }
          const acks = await producer.send({
            topic,
            acks: -1,
            timeout: CALL_TIMEOUT_MS,
            compression,
            messages: records.map(({ key, value, headers, timestamp }) => ({ key, value, headers, timestamp })),
          })
          for (const ack of acks) {
            check(ack.errorCode === 0, `partition ${ack.partition} acknowledged without error`)
            const sent = byPartition.get(ack.partition) || []
            if (!produced.has(ack.partition)) produced.set(ack.partition, new Map())
            sent.forEach((record, i) => {
              const offset = BigInt(ack.baseOffset) + BigInt(i)
              check(!produced.get(ack.partition).has(offset), `offset ${offset} of partition ${ack.partition} acknowledged once`)
              produced.get(ack.partition).set(offset, record)
            })
          }
        }
      } finally {
        await producer.disconnect()
      }
      const total = [...produced.values()].reduce((sum, records) => sum + records.size, 0)
      check(total === Object.keys(CODECS).length * RECORDS_PER_CODEC, `every record acknowledged (${total})`)
      check(produced.size > 1, 'keys spread over partitions')
    })

    await step('read by partition and check every record', async () => {
      const cluster = kafka[Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')]({
        allowAutoTopicCreation: false,
      })
      await cluster.connect()
      try {
        await cluster.addTargetTopic(topic)
        await cluster.refreshMetadata()
        const deadline = Date.now() + CALL_TIMEOUT_MS
        for (const [partition, records] of produced) {
          let next = 0n
          const leader = Object.keys(cluster.findLeaderForPartitions(topic, [partition]))[0]
          const broker = await cluster.findBroker({ nodeId: leader })
          while (next < BigInt(records.size)) {
            if (Date.now() > deadline) throw new Error(`partition ${partition}: read ${next} of ${records.size} records`)
            const response = await broker.fetch({
              maxWaitTime: 500,
              isolationLevel: 1,
              topics: [{ topic, partitions: [{ partition, fetchOffset: String(next), maxBytes: 1048576 }] }],
            })
            const partitionData = response.responses[0].partitions[0]
            check(partitionData.errorCode === 0, `fetch ${topic}-${partition}: error ${partitionData.errorCode}`)
            const batch = new Batch(topic, String(next), partitionData)
            for (const message of batch.messages) {
              const where = `${topic}-${partition}@${message.offset}`
              if (BigInt(message.offset) !== next) throw new Error(`${where}: after offset ${next - 1n}`)
              checkRecord(where, message, records.get(next))
              next++
              checks++
            }
          }
        }
      } finally {
        await cluster.disconnect()
      }
    })

    await step('consume in a group, commit, resume', () => groupCommitAndResume(kafka, admin, topic, options.group, produced))

    await step('list offsets', async () => {
      const offsets = await admin.fetchTopicOffsets(topic)
      for (const { partition, offset, low } of offsets) {
        const count = produced.has(partition) ? produced.get(partition).size : 0
        check(low === '0', `partition ${partition} earliest offset ${low}, want 0`)
        check(offset === String(count), `partition ${partition} latest offset ${offset}, want ${count}`)
      }
    })

    await step('missing topic errors', () => missingTopicErrors(kafka, admin, missing))

    await step('delete topic', async () => {
      await admin.deleteTopics({ topics: [topic], timeout: CALL_TIMEOUT_MS })
      await eventually(`${topic} gone from metadata`, async () => !(await admin.listTopics()).includes(topic))
      checks++
      // On a cluster each node forgets the topic when it applies the deletion, a moment apart,
      // and kafkajs's admin asks whichever node it likes; while they disagree, kafkajs can even
      // fail inside its own metadata cache (a TypeError). So the deleted topic's checks are
      // retried as a whole until every answer is the missing topic's.
      let lastFailure = null
      await eventually(`every node answering ${topic} as missing`, async () => {
        try {
          await missingTopicErrors(kafka, admin, topic)
          return true
        } catch (failure) {
          lastFailure = failure
          return false
        }
      }).catch(timeout => {
        throw new Error(`${timeout.message}; last failure: ${lastFailure && lastFailure.stack}`)
      })
    })
  } finally {
    await admin.disconnect()
  }
  console.log(`kafkajs scenario: all ${checks} checks held`)
}

const overall = setTimeout(() => {
  console.log('FAILED: the scenario did not finish within 180 s')
  process.exit(1)
}, 180000)
main().then(() => {
  clearTimeout(overall)
  process.exit(0)
}, error => {
  console.log(`FAILED: ${error && error.stack ? error.stack : error}`)
  process.exit(1)
})
