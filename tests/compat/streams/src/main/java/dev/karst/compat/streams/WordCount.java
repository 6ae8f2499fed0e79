package dev.karst.compat.streams;

import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The word-count topology of Kafka Streams' own quick-start, as a user deploys it: lines of
 * text from an input topic, split into lower-case words, grouped by word (through a
 * repartition topic), counted in a RocksDB store backed by a compacted changelog topic, and
 * every count's update written to an output topic (word → count as a 64-bit integer).
 *
 * <p>At-least-once, Kafka Streams' default: {@code exactly_once_v2} needs transactions, which
 * Karst does not serve yet. The application runs until SIGTERM, when its shutdown hook closes
 * Kafka Streams (committing what it processed, leaving the group) and prints {@code closed}.
 *
 * <p>Usage: {@code WordCount --bootstrap HOST:PORT[,...] --application-id ID --input TOPIC
 * --output TOPIC --state-dir DIR --replication-factor R}. Prints each state change as
 * {@code state FROM -> TO}.
 */
public final class WordCount {
    /** How often processed offsets are committed and the store's cache flushed downstream. */
    static final Duration COMMIT_INTERVAL = Duration.ofSeconds(1);
    /** How long closing may take: a flush, a commit and leaving the group. */
    static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(30);

    public static void main(String[] args) throws InterruptedException {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        Map<String, String> options = parseOptions(args);
        String input = required(options, "--input");
        String output = required(options, "--output");

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
                .filter((key, word) -> !word.isEmpty())
                .groupBy((key, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        Properties config = new Properties();
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, required(options, "--application-id"));
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(options, "--bootstrap"));
        config.put(StreamsConfig.STATE_DIR_CONFIG, required(options, "--state-dir"));
        config.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, required(options, "--replication-factor"));
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        config.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.toString(COMMIT_INTERVAL.toMillis()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((to, from) -> {
            System.out.println("state " + from + " -> " + to);
            System.out.flush();
            if (to == KafkaStreams.State.ERROR || to == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(failure -> {
            System.out.println("FAILED: " + failure);
            failure.printStackTrace(System.out);
            System.out.flush();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            // A planned stop leaves the group, so a restarted instance is given the partitions
            // at once rather than after the old member's session times out (Kafka Streams'
            // default close stays a member, betting on a restart within the session timeout).
            boolean closed = streams.close(CloseOptions.groupMembershipOperation(
                    CloseOptions.GroupMembershipOperation.LEAVE_GROUP).withTimeout(CLOSE_TIMEOUT));
            System.out.println(closed ? "closed" : "FAILED: not closed within " + CLOSE_TIMEOUT);
            System.out.flush();
        }, "word-count-shutdown"));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.out.println("FAILED: Kafka Streams is in state ERROR");
            System.out.flush();
            System.exit(1);
        }
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
