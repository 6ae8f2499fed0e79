package dev.karst.compat;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java kafka-clients scenario of Karst's compatibility suite (issue 11), run against one
 * broker or a cluster that has automatic topic creation turned off:
 *
 * <ol>
 *   <li>admin: cluster description, create a topic with a config, describe it, alter and
 *       describe its configs, add partitions; the errors for an existing topic and a bad config;
 *   <li>produce keyed records with headers in every compression codec;
 *   <li>consume them back with {@code assign()} and check every record, offset by offset, and
 *       the offsets ListOffsets reports;
 *   <li>a consumer group: one member subscribes, reads every record, commits an offset in the
 *       middle of each partition and closes; the admin lists and describes the group and its
 *       offsets; a second member resumes exactly at those offsets, commits the end, and the
 *       group is deleted;
 *   <li>a missing topic: describe, delete and produce each fail with the error Kafka gives;
 *   <li>delete the topic, after which it is missing too.
 * </ol>
 *
 * <p>One JVM runs all of it: a JVM start costs more than the scenario. Usage: {@code Scenario
 * --bootstrap HOST:PORT[,...] --brokers N --replication-factor R --topic-prefix NAME}. Prints
 * one line per step and exits 0, or names the failed step and exits 1.
 */
public final class Scenario {
    /**
     * Karst serves InitProducerId (issue 8), which the producer's default
     * ({@code enable.idempotence=true}) needs: the producers run with Kafka's defaults.
     */
    static final boolean IDEMPOTENCE_SERVED = true;

    /**
     * {@code -Dcompat.producerDefaults=true} runs the producers with every default even so:
     * test_compat_clients.py does, marked as expected to fail until issue 8 lands.
     */
    static final boolean PRODUCER_DEFAULTS = IDEMPOTENCE_SERVED || Boolean.getBoolean("compat.producerDefaults");

    /** Every admin call, send and poll loop is bounded by this. */
    static final Duration CALL_TIMEOUT = Duration.ofSeconds(30);
    /** Metadata and configs reach every node of a cluster within this (eventual reads). */
    static final Duration PROPAGATION_TIMEOUT = Duration.ofSeconds(20);
    /** How long a producer waits for metadata of a topic that does not exist. */
    static final Duration MISSING_TOPIC_BLOCK = Duration.ofSeconds(2);

    static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");
    static final int RECORDS_PER_CODEC = 400;
    static final int PARTITIONS_CREATED = 3;
    static final int PARTITIONS_AFTER_GROWTH = 4;

    private final String bootstrap;
    private final int brokers;
    private final short replicationFactor;
    private final String topic;
    private final String missingTopic;
    private final String group;
    private int checks;

    private Scenario(String bootstrap, int brokers, short replicationFactor, String topicPrefix) {
        this.bootstrap = bootstrap;
        this.brokers = brokers;
        this.replicationFactor = replicationFactor;
        this.topic = topicPrefix + "-codecs";
        this.missingTopic = topicPrefix + "-missing";
        this.group = topicPrefix + "-group";
    }

    public static void main(String[] args) {
        // Client warnings only (slf4j-simple, to stderr): the INFO config dumps drown the steps.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        Map<String, String> options = parseOptions(args);
        Scenario scenario = new Scenario(
                required(options, "--bootstrap"),
                Integer.parseInt(required(options, "--brokers")),
                Short.parseShort(required(options, "--replication-factor")),
                required(options, "--topic-prefix"));
        String step = "connect";
        try (Admin admin = Admin.create(scenario.adminConfig())) {
            step = "describe cluster";
            scenario.timed(step, () -> scenario.describeCluster(admin));
            step = "create and describe topic";
            scenario.timed(step, () -> scenario.createAndDescribeTopic(admin));
            step = "alter and describe configs";
            scenario.timed(step, () -> scenario.alterAndDescribeConfigs(admin));
            step = "create partitions";
            scenario.timed(step, () -> scenario.growPartitions(admin));
            step = "produce in every codec";
            Map<TopicPartition, Map<Long, Expected>> produced = scenario.timedValue(step, scenario::produceEveryCodec);
            step = "consume with assign and check every record";
            scenario.timed(step, () -> scenario.consumeAndCheck(produced));
            step = "consume in a group, commit, resume";
            scenario.timed(step, () -> scenario.consumeInGroupCommitAndResume(admin, produced));
            step = "list offsets";
            scenario.timed(step, () -> scenario.listOffsets(admin, produced));
            step = "missing topic errors";
            scenario.timed(step, () -> scenario.missingTopicErrors(admin, scenario.missingTopic));
            step = "delete topic";
            scenario.timed(step, () -> scenario.deleteTopic(admin));
        } catch (Throwable failure) {
            System.out.println("FAILED " + step + ": " + failure);
            failure.printStackTrace(System.out);
            System.out.flush();
            System.exit(1);
        }
        System.out.println("java kafka-clients scenario: all " + scenario.checks + " checks held");
        System.out.flush();
        // Client threads must not keep the JVM up (a stuck close would hang the test).
        System.exit(0);
    }

    // -- steps ------------------------------------------------------------------------------

    void describeCluster(Admin admin) throws Exception {
        DescribeClusterResult cluster = admin.describeCluster();
        check(cluster.nodes().get(timeoutSeconds(), TimeUnit.SECONDS).size() == brokers, "cluster has " + brokers + " brokers");
        check(cluster.clusterId().get(timeoutSeconds(), TimeUnit.SECONDS) != null, "cluster id present");
        check(cluster.controller().get(timeoutSeconds(), TimeUnit.SECONDS) != null, "a controller is named");
    }

    void createAndDescribeTopic(Admin admin) throws Exception {
        NewTopic newTopic = new NewTopic(topic, PARTITIONS_CREATED, replicationFactor)
                .configs(Map.of("retention.ms", "86400000", "cleanup.policy", "delete"));
        admin.createTopics(List.of(newTopic)).all().get(timeoutSeconds(), TimeUnit.SECONDS);

        TopicDescription description = eventually("topic " + topic + " described with its partitions",
                () -> describeTopic(admin, topic));
        check(description.partitions().size() == PARTITIONS_CREATED, "partition count " + PARTITIONS_CREATED);
        description.partitions().forEach(partition -> {
            check(partition.leader() != null, "partition " + partition.partition() + " has a leader");
            check(partition.replicas().size() == replicationFactor,
                    "partition " + partition.partition() + " has " + replicationFactor + " replicas");
        });
        check(description.topicId() != null && !description.topicId().toString().isEmpty(), "topic id present");

        // Creating it again: TOPIC_ALREADY_EXISTS.
        expectFailure(TopicExistsException.class, "create an existing topic",
                () -> admin.createTopics(List.of(new NewTopic(topic, 1, replicationFactor))).all()
                        .get(timeoutSeconds(), TimeUnit.SECONDS));
        // A config value of the wrong type: INVALID_CONFIG.
        expectFailure(InvalidConfigurationException.class, "create with retention.ms=not-a-number",
                () -> admin.createTopics(List.of(new NewTopic(topic + "-bad-config", 1, replicationFactor)
                        .configs(Map.of("retention.ms", "not-a-number")))).all()
                        .get(timeoutSeconds(), TimeUnit.SECONDS));
    }

    void alterAndDescribeConfigs(Admin admin) throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ConfigEntry retention = topicConfig(admin, resource).get("retention.ms");
        check(retention != null && "86400000".equals(retention.value()), "retention.ms as created");
        check(retention.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "retention.ms is a topic override");

        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.bytes", "1073741824"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", null), AlterConfigOp.OpType.DELETE))))
                .all().get(timeoutSeconds(), TimeUnit.SECONDS);

        Map<String, ConfigEntry> altered = eventually("altered configs of " + topic, () -> {
            Map<String, ConfigEntry> entries = topicConfig(admin, resource);
            ConfigEntry bytes = entries.get("retention.bytes");
            ConfigEntry millis = entries.get("retention.ms");
            boolean done = bytes != null && "1073741824".equals(bytes.value())
                    && millis != null && millis.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG;
            return done ? entries : null;
        });
        check(altered.get("retention.bytes").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                "retention.bytes is a topic override");
        check("604800000".equals(altered.get("retention.ms").value()), "retention.ms back to the default of 7 days");
        check("delete".equals(altered.get("cleanup.policy").value()), "cleanup.policy kept");
    }

    void growPartitions(Admin admin) throws Exception {
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(PARTITIONS_AFTER_GROWTH)))
                .all().get(timeoutSeconds(), TimeUnit.SECONDS);
        eventually("topic " + topic + " with " + PARTITIONS_AFTER_GROWTH + " partitions", () -> {
            TopicDescription description = describeTopic(admin, topic);
            return description != null && description.partitions().size() == PARTITIONS_AFTER_GROWTH ? description : null;
        });
        checks++;
    }

    Map<TopicPartition, Map<Long, Expected>> produceEveryCodec() throws Exception {
        Map<TopicPartition, Map<Long, Expected>> produced = new HashMap<>();
        for (String codec : CODECS) {
            Properties config = producerConfig();
            config.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                List<Expected> sent = new ArrayList<>();
                for (int index = 0; index < RECORDS_PER_CODEC; index++) {
                    Expected record = Expected.of(codec, index);
                    sent.add(record);
                    acks.add(producer.send(new ProducerRecord<>(topic, null, null, record.key, record.value,
                            record.headers())));
                }
                producer.flush();
                for (int index = 0; index < acks.size(); index++) {
                    RecordMetadata metadata = acks.get(index).get(timeoutSeconds(), TimeUnit.SECONDS);
                    Expected record = sent.get(index).withTimestamp(metadata.timestamp());
                    Expected earlier = produced
                            .computeIfAbsent(new TopicPartition(topic, metadata.partition()), p -> new HashMap<>())
                            .put(metadata.offset(), record);
                    check(earlier == null, "offset " + metadata.offset() + " of partition "
                            + metadata.partition() + " acknowledged once");
                }
            }
        }
        int total = produced.values().stream().mapToInt(Map::size).sum();
        check(total == CODECS.size() * RECORDS_PER_CODEC, "every record acknowledged");
        check(produced.size() > 1, "keys spread over partitions");
        return produced;
    }

    void consumeAndCheck(Map<TopicPartition, Map<Long, Expected>> produced) {
        Properties config = new Properties();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        // No group.id: assign() and explicit positions (the group step below subscribes).
        config.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "500");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(config)) {
            Set<TopicPartition> partitions = produced.keySet();
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> ends = consumer.endOffsets(partitions, CALL_TIMEOUT);
            for (TopicPartition partition : partitions) {
                check(ends.get(partition) == produced.get(partition).size(),
                        "end offset of " + partition + " is the count produced there");
            }
            Map<TopicPartition, Long> nextOffset = new HashMap<>();
            partitions.forEach(partition -> nextOffset.put(partition, 0L));
            checks += consumeUntil(consumer, produced, nextOffset);
        }
    }

    /**
     * Polls until every partition of {@code nextOffset} has reached the end of what was
     * produced there, checking each record against it and that offsets follow one another from
     * where {@code nextOffset} starts; returns the number of records checked.
     */
    int consumeUntil(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Map<Long, Expected>> produced,
            Map<TopicPartition, Long> nextOffset) {
        long deadline = System.nanoTime() + CALL_TIMEOUT.toNanos();
        int consumed = 0;
        int wanted = 0;
        for (Map.Entry<TopicPartition, Long> start : nextOffset.entrySet()) {
            wanted += produced.get(start.getKey()).size() - start.getValue();
        }
        while (consumed < wanted) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("consumed " + consumed + " of " + wanted + " records in " + CALL_TIMEOUT);
            }
            for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                TopicPartition partition = new TopicPartition(record.topic(), record.partition());
                Long want = nextOffset.get(partition);
                if (want == null || record.offset() != want) {
                    throw new AssertionError(partition + ": offset " + record.offset() + ", want " + want);
                }
                nextOffset.put(partition, want + 1);
                Expected expected = produced.get(partition).get(record.offset());
                if (expected == null) {
                    throw new AssertionError(partition + ": offset " + record.offset() + " was never acknowledged");
                }
                expected.check(record);
                consumed++;
            }
        }
        return consumed;
    }

    void consumeInGroupCommitAndResume(Admin admin, Map<TopicPartition, Map<Long, Expected>> produced) throws Exception {
        // The first member reads everything, then commits the middle of each partition, as an
        // application would that had processed only that far.
        Map<TopicPartition, OffsetAndMetadata> middle = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(groupConsumerConfig("first"))) {
            consumer.subscribe(List.of(topic));
            Map<TopicPartition, Long> nextOffset = new HashMap<>();
            produced.keySet().forEach(partition -> nextOffset.put(partition, 0L));
            checks += consumeUntil(consumer, produced, nextOffset);
            check(consumer.assignment().size() == PARTITIONS_AFTER_GROWTH,
                    "the only member is assigned all " + PARTITIONS_AFTER_GROWTH + " partitions: " + consumer.assignment());
            produced.forEach((partition, records) ->
                    middle.put(partition, new OffsetAndMetadata(records.size() / 2, "first member")));
            consumer.commitSync(middle, CALL_TIMEOUT);
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(middle.keySet(), CALL_TIMEOUT);
            check(committed.equals(middle), "committed() reads back the commit: " + committed);
        }

        // The member left on close: the group is empty, its offsets kept.
        ConsumerGroupDescription empty = describeGroup(admin);
        check(empty.groupState() == GroupState.EMPTY, "group " + group + " empty after close: " + empty.groupState());
        check(empty.members().isEmpty(), "no members after close");
        Collection<GroupListing> listed = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all()
                .get(timeoutSeconds(), TimeUnit.SECONDS);
        check(listed.stream().anyMatch(listing -> listing.groupId().equals(group)
                        && "consumer".equals(listing.protocol())
                        && listing.type().equals(Optional.of(GroupType.CLASSIC))),
                "listGroups names " + group + " as a classic consumer group: " + listed);
        check(groupOffsets(admin).equals(middle), "listConsumerGroupOffsets shows the commit");

        // A new member of the same group resumes exactly after the committed offsets.
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(groupConsumerConfig("second"))) {
            consumer.subscribe(List.of(topic));
            Map<TopicPartition, Long> nextOffset = new HashMap<>();
            middle.forEach((partition, offset) -> nextOffset.put(partition, offset.offset()));
            checks += consumeUntil(consumer, produced, nextOffset);
            consumer.commitSync(CALL_TIMEOUT);

            ConsumerGroupDescription stable = describeGroup(admin);
            check(stable.groupState() == GroupState.STABLE, "group stable with a member: " + stable.groupState());
            check(stable.type() == GroupType.CLASSIC, "classic group");
            check(!stable.isSimpleConsumerGroup(), "not a simple consumer group");
            check(stable.members().size() == 1, "one member: " + stable.members());
            MemberDescription member = stable.members().iterator().next();
            check(member.clientId().equals(group + "-second"), "member's client id " + member.clientId());
            check(member.assignment().topicPartitions().size() == PARTITIONS_AFTER_GROWTH,
                    "member assigned " + member.assignment().topicPartitions());
            Map<TopicPartition, OffsetAndMetadata> ends = groupOffsets(admin);
            produced.forEach((partition, records) -> check(ends.get(partition).offset() == records.size(),
                    partition + " committed at its end: " + ends.get(partition)));
        }

        admin.deleteConsumerGroups(List.of(group)).all().get(timeoutSeconds(), TimeUnit.SECONDS);
        Collection<GroupListing> after = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all()
                .get(timeoutSeconds(), TimeUnit.SECONDS);
        check(after.stream().noneMatch(listing -> listing.groupId().equals(group)), group + " deleted");
    }

    ConsumerGroupDescription describeGroup(Admin admin) throws Exception {
        return admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get(timeoutSeconds(), TimeUnit.SECONDS);
    }

    Map<TopicPartition, OffsetAndMetadata> groupOffsets(Admin admin) throws Exception {
        return admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(timeoutSeconds(), TimeUnit.SECONDS);
    }

    void listOffsets(Admin admin, Map<TopicPartition, Map<Long, Expected>> produced) throws Exception {
        Map<TopicPartition, OffsetSpec> earliest = new HashMap<>();
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        Map<TopicPartition, OffsetSpec> maxTimestamp = new HashMap<>();
        for (TopicPartition partition : produced.keySet()) {
            earliest.put(partition, OffsetSpec.earliest());
            latest.put(partition, OffsetSpec.latest());
            maxTimestamp.put(partition, OffsetSpec.maxTimestamp());
        }
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> first =
                admin.listOffsets(earliest).all().get(timeoutSeconds(), TimeUnit.SECONDS);
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> last =
                admin.listOffsets(latest).all().get(timeoutSeconds(), TimeUnit.SECONDS);
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> newest =
                admin.listOffsets(maxTimestamp).all().get(timeoutSeconds(), TimeUnit.SECONDS);
        for (TopicPartition partition : produced.keySet()) {
            Map<Long, Expected> records = produced.get(partition);
            check(first.get(partition).offset() == 0, partition + " earliest offset 0");
            check(last.get(partition).offset() == records.size(), partition + " latest offset = records produced");
            long maxTimestampSeen = records.values().stream().mapToLong(record -> record.timestamp).max().orElseThrow();
            check(newest.get(partition).timestamp() == maxTimestampSeen,
                    partition + " max timestamp " + newest.get(partition).timestamp() + " = newest produced " + maxTimestampSeen);
            long offset = newest.get(partition).offset();
            check(records.containsKey(offset) && records.get(offset).timestamp == maxTimestampSeen,
                    partition + " max-timestamp offset holds that timestamp");
        }
    }

    void missingTopicErrors(Admin admin, String missing) throws Exception {
        expectFailure(UnknownTopicOrPartitionException.class, "describe missing topic " + missing,
                () -> admin.describeTopics(List.of(missing)).allTopicNames().get(timeoutSeconds(), TimeUnit.SECONDS));
        expectFailure(UnknownTopicOrPartitionException.class, "delete missing topic " + missing,
                () -> admin.deleteTopics(List.of(missing)).all().get(timeoutSeconds(), TimeUnit.SECONDS));
        expectFailure(UnknownTopicOrPartitionException.class, "describe configs of missing topic " + missing,
                () -> admin.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.TOPIC, missing))).all()
                        .get(timeoutSeconds(), TimeUnit.SECONDS));
        // The producer asks Metadata for the topic (allowing auto-creation, which the broker has
        // off), hears UNKNOWN_TOPIC_OR_PARTITION until max.block.ms, then fails the send.
        Properties config = producerConfig();
        config.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Long.toString(MISSING_TOPIC_BLOCK.toMillis()));
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config)) {
            expectFailure(TimeoutException.class, "produce to missing topic " + missing,
                    () -> producer.send(new ProducerRecord<>(missing, "k".getBytes(StandardCharsets.UTF_8),
                            "v".getBytes(StandardCharsets.UTF_8))).get(timeoutSeconds(), TimeUnit.SECONDS));
        }
        // Nothing above created it (auto.create.topics.enable=false on the broker).
        check(!admin.listTopics().names().get(timeoutSeconds(), TimeUnit.SECONDS).contains(missing),
                missing + " still does not exist");
    }

    void deleteTopic(Admin admin) throws Exception {
        admin.deleteTopics(List.of(topic)).all().get(timeoutSeconds(), TimeUnit.SECONDS);
        eventually("topic " + topic + " gone from every node's metadata", () -> {
            try {
                admin.describeTopics(List.of(topic)).allTopicNames().get(timeoutSeconds(), TimeUnit.SECONDS);
                return null;
            } catch (ExecutionException error) {
                return error.getCause() instanceof UnknownTopicOrPartitionException ? Boolean.TRUE : null;
            }
        });
        checks++;
        // A deleted topic is as missing as one that never existed.
        missingTopicErrors(admin, topic);
    }

    // -- the records ------------------------------------------------------------------------

    /** One produced record as the consumer must see it. */
    static final class Expected {
        final String codec;
        final int index;
        final byte[] key;
        final byte[] value;
        final long timestamp;

        private Expected(String codec, int index, byte[] key, byte[] value, long timestamp) {
            this.codec = codec;
            this.index = index;
            this.key = key;
            this.value = value;
            this.timestamp = timestamp;
        }

        static Expected of(String codec, int index) {
            byte[] key = ("key-" + codec + "-" + index).getBytes(StandardCharsets.UTF_8);
            // Repetitive, so every codec has something to compress; index 7 of each codec is a
            // record with an empty value.
            byte[] value = index == 7 ? new byte[0]
                    : ("value " + codec + " " + index + " ").repeat(1 + index % 5).getBytes(StandardCharsets.UTF_8);
            return new Expected(codec, index, key, value, -1);
        }

        Expected withTimestamp(long timestamp) {
            return new Expected(codec, index, key, value, timestamp);
        }

        List<Header> headers() {
            List<Header> headers = new ArrayList<>();
            headers.add(new RecordHeader("codec", codec.getBytes(StandardCharsets.UTF_8)));
            headers.add(new RecordHeader("index", ByteBuffer.allocate(4).putInt(index).array()));
            // A header with a null value, and a repeated header name: both are legal.
            headers.add(new RecordHeader("null-valued", null));
            headers.add(new RecordHeader("codec", "again".getBytes(StandardCharsets.UTF_8)));
            return headers;
        }

        void check(ConsumerRecord<byte[], byte[]> record) {
            String where = record.topic() + "-" + record.partition() + "@" + record.offset() + " (" + codec + " #" + index + ")";
            if (!Arrays.equals(key, record.key())) {
                throw new AssertionError(where + ": key " + text(record.key()) + ", want " + text(key));
            }
            if (!Arrays.equals(value, record.value())) {
                throw new AssertionError(where + ": value " + text(record.value()) + ", want " + text(value));
            }
            List<Header> got = Arrays.asList(record.headers().toArray());
            List<Header> want = headers();
            boolean same = got.size() == want.size();
            for (int i = 0; same && i < got.size(); i++) {
                same = got.get(i).key().equals(want.get(i).key()) && Arrays.equals(got.get(i).value(), want.get(i).value());
            }
            if (!same) {
                throw new AssertionError(where + ": headers " + describe(got) + ", want " + describe(want));
            }
            if (record.timestampType() != TimestampType.CREATE_TIME || record.timestamp() != timestamp) {
                throw new AssertionError(where + ": timestamp " + record.timestampType() + " " + record.timestamp()
                        + ", want CreateTime " + timestamp);
            }
        }

        static String text(byte[] bytes) {
            return bytes == null ? "null" : "'" + new String(bytes, StandardCharsets.UTF_8) + "'";
        }

        static String describe(Collection<Header> headers) {
            return headers.stream().map(header -> header.key() + "=" + text(header.value()))
                    .collect(Collectors.joining(", ", "[", "]"));
        }
    }

    // -- clients ------------------------------------------------------------------------------

    Properties adminConfig() {
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, Long.toString(CALL_TIMEOUT.toMillis()));
        return config;
    }

    /** A group member with Kafka's defaults but for a fresh group's start and manual commits. */
    Properties groupConsumerConfig(String member) {
        Properties config = new Properties();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        config.put(ConsumerConfig.CLIENT_ID_CONFIG, group + "-" + member);
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        return config;
    }

    Properties producerConfig() {
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, Long.toString(CALL_TIMEOUT.toMillis()));
        config.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, Long.toString(CALL_TIMEOUT.toMillis() / 2));
        if (!PRODUCER_DEFAULTS) {
            config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"); // issue 8
        }
        return config;
    }

    TopicDescription describeTopic(Admin admin, String name) throws Exception {
        try {
            TopicDescription description = admin.describeTopics(List.of(name)).allTopicNames()
                    .get(timeoutSeconds(), TimeUnit.SECONDS).get(name);
            return description.partitions().stream().allMatch(p -> p.leader() != null) ? description : null;
        } catch (ExecutionException error) {
            if (error.getCause() instanceof UnknownTopicOrPartitionException) {
                return null; // not on this node yet
            }
            throw error;
        }
    }

    Map<String, ConfigEntry> topicConfig(Admin admin, ConfigResource resource) throws Exception {
        Config config = admin.describeConfigs(List.of(resource)).all().get(timeoutSeconds(), TimeUnit.SECONDS).get(resource);
        Map<String, ConfigEntry> entries = new HashMap<>();
        config.entries().forEach(entry -> entries.put(entry.name(), entry));
        return entries;
    }

    // -- checking -----------------------------------------------------------------------------

    interface Step {
        void run() throws Exception;
    }

    interface ValueStep<T> {
        T run() throws Exception;
    }

    void timed(String name, Step step) throws Exception {
        timedValue(name, () -> {
            step.run();
            return null;
        });
    }

    <T> T timedValue(String name, ValueStep<T> step) throws Exception {
        long started = System.nanoTime();
        int checksBefore = checks;
        T value = step.run();
        System.out.printf("ok  %-45s %3d checks %6d ms%n", name, checks - checksBefore,
                TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started));
        System.out.flush();
        return value;
    }

    void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError("check failed: " + what);
        }
        checks++;
    }

    void expectFailure(Class<? extends Throwable> expected, String what, Step call) {
        Throwable cause;
        try {
            call.run();
            throw new AssertionError(what + ": succeeded, want " + expected.getSimpleName());
        } catch (ExecutionException error) {
            cause = error.getCause();
        } catch (AssertionError error) {
            throw error;
        } catch (Throwable error) {
            cause = error;
        }
        if (!expected.isInstance(cause)) {
            throw new AssertionError(what + ": failed with " + cause + ", want " + expected.getSimpleName(), cause);
        }
        checks++;
    }

    /** Polls {@code attempt} until it returns non-null, for at most PROPAGATION_TIMEOUT. */
    <T> T eventually(String what, ValueStep<T> attempt) throws Exception {
        long deadline = System.nanoTime() + PROPAGATION_TIMEOUT.toNanos();
        while (true) {
            T value = attempt.run();
            if (value != null) {
                return value;
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + PROPAGATION_TIMEOUT + " waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    static long timeoutSeconds() {
        return CALL_TIMEOUT.toSeconds();
    }

    static Map<String, String> parseOptions(String[] args) {
        Map<String, String> options = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            options.put(args[i], args[i + 1]);
        }
        return options;
    }

    static String required(Map<String, String> options, String name) {
        return Objects.requireNonNull(options.get(name), "missing option " + name);
    }
}
