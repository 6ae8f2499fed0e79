package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// saramaVersion is the protocol level Sarama speaks: a user of a Kafka 4 cluster sets it to
// 4.0 (Sarama does not negotiate versions; its default is 2.8).
var saramaVersion = sarama.V4_0_0_0

func saramaConfig(codec string) *sarama.Config {
	config := sarama.NewConfig()
	config.Version = saramaVersion
	config.ClientID = "karst-compat-sarama"
	config.Net.DialTimeout = callTimeout
	config.Net.ReadTimeout = callTimeout
	config.Admin.Timeout = callTimeout
	// Sarama is not idempotent by default (Producer.Idempotent=false), so issue 8 does not
	// matter here.
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Return.Successes = true
	config.Producer.Flush.Frequency = 5 * time.Millisecond
	config.Producer.Partitioner = sarama.NewHashPartitioner
	config.Producer.Compression = map[string]sarama.CompressionCodec{
		"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
		"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
	}[codec]
	config.Metadata.Retry.Max = 2
	config.Metadata.Retry.Backoff = 100 * time.Millisecond
	config.Producer.Retry.Max = 2
	config.Producer.Retry.Backoff = 100 * time.Millisecond
	return config
}

func runSarama(s *scenario, options Options) {
	topic := options.TopicPrefix + "-codecs"
	missing := options.TopicPrefix + "-missing"
	admin, err := sarama.NewClusterAdmin(options.Bootstrap, saramaConfig("none"))
	must(err, "NewClusterAdmin")
	defer admin.Close()

	s.step("describe cluster", func() {
		brokers, controller, err := admin.DescribeCluster()
		must(err, "DescribeCluster")
		s.check(len(brokers) == options.Brokers, "%d brokers, want %d", len(brokers), options.Brokers)
		s.check(controller >= 0, "a controller is named")
	})

	s.step("create and describe topic", func() {
		retention, cleanup := "86400000", "delete"
		must(admin.CreateTopic(topic, &sarama.TopicDetail{
			NumPartitions: partitionsCreated, ReplicationFactor: options.ReplicationFactor,
			ConfigEntries: map[string]*string{"retention.ms": &retention, "cleanup.policy": &cleanup},
		}, false), "CreateTopic")
		var described *sarama.TopicMetadata
		eventually("topic "+topic+" with leaders", func() bool {
			metadata, err := admin.DescribeTopics([]string{topic})
			must(err, "DescribeTopics")
			described = metadata[0]
			if !errors.Is(described.Err, sarama.ErrNoError) || len(described.Partitions) != partitionsCreated {
				return false
			}
			for _, partition := range described.Partitions {
				if partition.Leader < 0 {
					return false
				}
			}
			return true
		})
		for _, partition := range described.Partitions {
			s.check(len(partition.Replicas) == int(options.ReplicationFactor), "partition %d has %d replicas",
				partition.ID, options.ReplicationFactor)
		}
		s.check(described.Uuid != sarama.Uuid{}, "topic id present")

		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: options.ReplicationFactor}, false)
		s.check(errors.Is(err, sarama.ErrTopicAlreadyExists), "create existing topic: %v, want TOPIC_ALREADY_EXISTS", err)
		bad := "not-a-number"
		err = admin.CreateTopic(topic+"-bad-config", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: options.ReplicationFactor,
			ConfigEntries: map[string]*string{"retention.ms": &bad}}, false)
		s.check(errors.Is(err, sarama.ErrInvalidConfig), "bad config: %v, want INVALID_CONFIG", err)
	})

	s.step("alter and describe configs", func() {
		configs := saramaTopicConfigs(admin, topic)
		s.check(configs["retention.ms"].Value == "86400000", "retention.ms as created")
		s.check(configs["retention.ms"].Source == sarama.SourceTopic, "retention.ms is a topic override (source %v)", configs["retention.ms"].Source)
		bytes := "1073741824"
		must(admin.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
			"retention.bytes": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &bytes},
			"retention.ms":    {Operation: sarama.IncrementalAlterConfigsOperationDelete},
		}, false), "IncrementalAlterConfig")
		eventually("altered configs of "+topic, func() bool {
			configs = saramaTopicConfigs(admin, topic)
			return configs["retention.bytes"].Value == bytes && configs["retention.ms"].Source != sarama.SourceTopic
		})
		s.check(configs["retention.bytes"].Source == sarama.SourceTopic, "retention.bytes is a topic override")
		s.check(configs["retention.ms"].Value == "604800000", "retention.ms back to 7 days")
		s.check(configs["cleanup.policy"].Value == "delete", "cleanup.policy kept")
	})

	s.step("create partitions", func() {
		must(admin.CreatePartitions(topic, partitionsAfterGrowth, nil, false), "CreatePartitions")
		eventually(fmt.Sprintf("%s with %d partitions", topic, partitionsAfterGrowth), func() bool {
			metadata, err := admin.DescribeTopics([]string{topic})
			must(err, "DescribeTopics")
			return len(metadata[0].Partitions) == partitionsAfterGrowth
		})
		s.checks++
	})

	produced := Produced{}
	s.step("produce in every codec", func() {
		for _, codec := range codecs {
			producer, err := sarama.NewSyncProducer(options.Bootstrap, saramaConfig(codec))
			must(err, "NewSyncProducer")
			messages := make([]*sarama.ProducerMessage, 0, recordsPerCodec)
			sent := make([]Expected, 0, recordsPerCodec)
			for index := 0; index < recordsPerCodec; index++ {
				record := expectedRecord(codec, index)
				headers := make([]sarama.RecordHeader, 0, len(record.Headers))
				for _, header := range record.Headers {
					headers = append(headers, sarama.RecordHeader{Key: []byte(header.Key), Value: header.Value})
				}
				// Sarama leaves the timestamp to the broker unless it is set.
				record.Timestamp = time.Now().UnixMilli()
				messages = append(messages, &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(record.Key),
					Value: sarama.ByteEncoder(record.Value), Headers: headers, Timestamp: time.UnixMilli(record.Timestamp)})
				sent = append(sent, record)
			}
			must(producer.SendMessages(messages), "produce "+codec)
			for i, message := range messages {
				produced.add(s, message.Partition, message.Offset, sent[i])
			}
			must(producer.Close(), "close producer")
		}
		s.check(produced.total() == len(codecs)*recordsPerCodec, "every record acknowledged")
		s.check(len(produced) > 1, "keys spread over partitions")
	})

	s.step("consume by partition and check every record", func() {
		// Sarama's partition consumer, no group (the group step below subscribes).
		consumer, err := sarama.NewConsumer(options.Bootstrap, saramaConfig("none"))
		must(err, "NewConsumer")
		defer consumer.Close()
		deadline := time.After(callTimeout)
		for partition, records := range produced {
			partitionConsumer, err := consumer.ConsumePartition(topic, partition, sarama.OffsetOldest)
			must(err, fmt.Sprintf("ConsumePartition %d", partition))
			for next := int64(0); next < int64(len(records)); next++ {
				select {
				case message := <-partitionConsumer.Messages():
					where := fmt.Sprintf("%s-%d@%d", message.Topic, message.Partition, message.Offset)
					if message.Offset != next {
						panic(fmt.Errorf("%s: after offset %d", where, next-1))
					}
					headers := make([]Header, 0, len(message.Headers))
					for _, header := range message.Headers {
						headers = append(headers, Header{string(header.Key), header.Value})
					}
					records[next].checkRecord(where, message.Key, message.Value, headers, message.Timestamp.UnixMilli())
					s.checks++
				case consumeError := <-partitionConsumer.Errors():
					panic(fmt.Errorf("consume partition %d: %w", partition, consumeError))
				case <-deadline:
					panic(fmt.Errorf("partition %d: consumed %d of %d records in %s", partition, next, len(records), callTimeout))
				}
			}
			must(partitionConsumer.Close(), "close partition consumer")
		}
	})

	s.step("consume in a group, commit, resume", func() { saramaGroup(s, options, admin, topic, produced) })

	s.step("list offsets", func() {
		client, err := sarama.NewClient(options.Bootstrap, saramaConfig("none"))
		must(err, "NewClient")
		defer client.Close()
		for partition, records := range produced {
			oldest, err := client.GetOffset(topic, partition, sarama.OffsetOldest)
			must(err, "GetOffset oldest")
			newest, err := client.GetOffset(topic, partition, sarama.OffsetNewest)
			must(err, "GetOffset newest")
			s.check(oldest == 0, "partition %d earliest offset %d, want 0", partition, oldest)
			s.check(newest == int64(len(records)), "partition %d latest offset %d, want %d", partition, newest, len(records))
		}
	})

	s.step("missing topic errors", func() { saramaMissingTopic(s, options, admin, missing) })

	s.step("delete topic", func() {
		must(admin.DeleteTopic(topic), "DeleteTopic")
		eventually(topic+" gone from metadata", func() bool {
			metadata, err := admin.DescribeTopics([]string{topic})
			must(err, "DescribeTopics")
			return errors.Is(metadata[0].Err, sarama.ErrUnknownTopicOrPartition)
		})
		s.checks++
		saramaMissingTopic(s, options, admin, topic)
	})
}

func saramaTopicConfigs(admin sarama.ClusterAdmin, topic string) map[string]sarama.ConfigEntry {
	// Sarama asks any broker; one that has not applied the topic's creation yet answers
	// UNKNOWN_TOPIC_OR_PARTITION (metadata reaches brokers a moment after the controller).
	var entries []sarama.ConfigEntry
	eventually("configs of "+topic, func() bool {
		var err error
		entries, err = admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return false
		}
		must(err, "DescribeConfig "+topic)
		return true
	})
	configs := map[string]sarama.ConfigEntry{}
	for _, entry := range entries {
		configs[entry.Name] = entry
	}
	return configs
}

func saramaMissingTopic(s *scenario, options Options, admin sarama.ClusterAdmin, missing string) {
	metadata, err := admin.DescribeTopics([]string{missing})
	must(err, "DescribeTopics "+missing)
	s.check(errors.Is(metadata[0].Err, sarama.ErrUnknownTopicOrPartition), "describe %s: %v", missing, metadata[0].Err)

	_, err = admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: missing})
	s.check(errors.Is(err, sarama.ErrUnknownTopicOrPartition), "describe configs of %s: %v", missing, err)

	err = admin.DeleteTopic(missing)
	s.check(errors.Is(err, sarama.ErrUnknownTopicOrPartition), "delete %s: %v", missing, err)

	producer, err := sarama.NewSyncProducer(options.Bootstrap, saramaConfig("none"))
	must(err, "NewSyncProducer")
	defer producer.Close()
	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: missing, Value: sarama.StringEncoder("v")})
	s.check(errors.Is(err, sarama.ErrUnknownTopicOrPartition), "produce to %s: %v", missing, err)

	consumer, err := sarama.NewConsumer(options.Bootstrap, saramaConfig("none"))
	must(err, "NewConsumer")
	defer consumer.Close()
	_, err = consumer.ConsumePartition(missing, 0, sarama.OffsetOldest)
	s.check(errors.Is(err, sarama.ErrUnknownTopicOrPartition), "consume %s: %v", missing, err)

	topics, err := admin.ListTopics()
	must(err, "ListTopics")
	_, exists := topics[missing]
	s.check(!exists, "%s still does not exist", missing)
}
