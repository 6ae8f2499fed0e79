package main

// The consumer-group step of both Go clients: a first member subscribes, reads every record,
// commits the middle of each partition (as an application would that had processed only that
// far) and leaves; the admin lists and describes the group and fetches its offsets; a second
// member of the same group resumes exactly at those offsets, reads to the end and commits it;
// the admin describes the group with its member, then deletes it.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const firstMemberMetadata = "first member"

// middleOffsets is where the first member commits: half of each partition's records.
func middleOffsets(produced Produced) map[int32]int64 {
	middle := map[int32]int64{}
	for partition, records := range produced {
		middle[partition] = int64(len(records) / 2)
	}
	return middle
}

// consumedRecord is one record as either client delivers it.
type consumedRecord struct {
	partition   int32
	offset      int64
	key, value  []byte
	headers     []Header
	timestampMs int64
}

// groupReader checks delivered records against what was produced: per partition, offsets
// follow one another from where next starts, up to the end of what was produced there.
type groupReader struct {
	s        *scenario
	topic    string
	produced Produced
	next     map[int32]int64
	consumed int
	wanted   int
}

func newGroupReader(s *scenario, topic string, produced Produced, start map[int32]int64) *groupReader {
	reader := &groupReader{s: s, topic: topic, produced: produced, next: map[int32]int64{}}
	for partition, offset := range start {
		reader.next[partition] = offset
		reader.wanted += len(produced[partition]) - int(offset)
	}
	return reader
}

func (r *groupReader) done() bool { return r.consumed >= r.wanted }

func (r *groupReader) check(record consumedRecord) {
	where := fmt.Sprintf("%s-%d@%d", r.topic, record.partition, record.offset)
	want, known := r.next[record.partition]
	if !known || record.offset != want {
		panic(fmt.Errorf("%s: want offset %d", where, want))
	}
	r.next[record.partition]++
	expected, found := r.produced[record.partition][record.offset]
	if !found {
		panic(fmt.Errorf("%s: never acknowledged", where))
	}
	expected.checkRecord(where, record.key, record.value, record.headers, record.timestampMs)
	r.consumed++
	r.s.checks++
}

// -- franz-go -----------------------------------------------------------------------------------

func franzGroupMember(options Options, group, topic, member string) *kgo.Client {
	return franzClient(options, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ClientID(group+"-"+member),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
}

func franzReadUntilDone(ctx context.Context, client *kgo.Client, reader *groupReader) {
	for !reader.done() {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			panic(fmt.Errorf("consumed %d of %d records in %s", reader.consumed, reader.wanted, callTimeout))
		}
		for _, fetchError := range fetches.Errors() {
			panic(fmt.Errorf("fetch %s[%d]: %w", fetchError.Topic, fetchError.Partition, fetchError.Err))
		}
		fetches.EachRecord(func(record *kgo.Record) {
			headers := make([]Header, 0, len(record.Headers))
			for _, header := range record.Headers {
				headers = append(headers, Header{header.Key, header.Value})
			}
			reader.check(consumedRecord{record.Partition, record.Offset, record.Key, record.Value, headers,
				record.Timestamp.UnixMilli()})
		})
	}
}

func franzGroup(s *scenario, options Options, admin *kadm.Client, topic string, produced Produced) {
	group := options.TopicPrefix + "-group"
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	middle := middleOffsets(produced)

	first := franzGroupMember(options, group, topic, "first")
	starts := map[int32]int64{}
	for partition := range produced {
		starts[partition] = 0
	}
	franzReadUntilDone(ctx, first, newGroupReader(s, topic, produced, starts))
	commit := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for partition, offset := range middle {
		commit[topic][partition] = kgo.EpochOffset{Epoch: -1, Offset: offset}
	}
	var commitErr error
	first.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, response *kmsg.OffsetCommitResponse, err error) {
		commitErr = err
		for _, committed := range response.Topics {
			for _, partition := range committed.Partitions {
				if commitErr == nil {
					commitErr = kerr.ErrorForCode(partition.ErrorCode)
				}
			}
		}
	})
	must(commitErr, "commit the middle offsets")
	first.Close() // leaves the group

	listed, err := admin.ListGroups(ctx)
	must(err, "ListGroups")
	s.check(listed[group].ProtocolType == "consumer", "ListGroups names %s a consumer group: %+v", group, listed[group])
	described, err := admin.DescribeGroups(ctx, group)
	must(err, "DescribeGroups")
	must(described[group].Err, "describe "+group)
	s.check(described[group].State == "Empty", "group empty after its member left: %s", described[group].State)
	s.check(len(described[group].Members) == 0, "no members after close")
	fetched, err := admin.FetchOffsets(ctx, group)
	must(err, "FetchOffsets")
	must(fetched.Error(), "fetch offsets of "+group)
	for partition, offset := range middle {
		committed, found := fetched.Lookup(topic, partition)
		s.check(found && committed.At == offset, "partition %d committed at %d, want %d", partition, committed.At, offset)
	}

	second := franzGroupMember(options, group, topic, "second")
	defer second.Close()
	franzReadUntilDone(ctx, second, newGroupReader(s, topic, produced, middle))
	must(second.CommitUncommittedOffsets(ctx), "commit what the second member read")

	described, err = admin.DescribeGroups(ctx, group)
	must(err, "DescribeGroups")
	stable := described[group]
	s.check(stable.State == "Stable", "group stable with its member: %s", stable.State)
	s.check(len(stable.Members) == 1 && stable.Members[0].ClientID == group+"-second", "one member, the second: %+v", stable.Members)
	assigned := stable.AssignedPartitions()
	s.check(len(assigned[topic]) == partitionsAfterGrowth, "the member has every partition: %v", assigned)
	fetched, err = admin.FetchOffsets(ctx, group)
	must(err, "FetchOffsets")
	for partition, records := range produced {
		committed, _ := fetched.Lookup(topic, partition)
		s.check(committed.At == int64(len(records)), "partition %d committed at its end %d: %d", partition, len(records), committed.At)
	}
	second.Close()

	deleted, err := admin.DeleteGroups(ctx, group)
	must(err, "DeleteGroups")
	must(deleted.Error(), "delete "+group)
	listed, err = admin.ListGroups(ctx)
	must(err, "ListGroups")
	_, stillListed := listed[group]
	s.check(!stillListed, "%s gone after DeleteGroups", group)
}

// -- Sarama -------------------------------------------------------------------------------------

// saramaHandler hands every claimed message to the scenario's goroutine and keeps the
// session, through which that goroutine marks and commits offsets.
type saramaHandler struct {
	messages chan *sarama.ConsumerMessage
	sessions chan sarama.ConsumerGroupSession
}

func (h *saramaHandler) Setup(session sarama.ConsumerGroupSession) error {
	h.sessions <- session
	return nil
}

func (h *saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *saramaHandler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case message, open := <-claim.Messages():
			if !open {
				return nil
			}
			select {
			case h.messages <- message:
			case <-session.Context().Done():
				return nil
			}
		case <-session.Context().Done():
			return nil
		}
	}
}

// saramaMember is a running consumer-group member: Consume in a loop until stopped.
type saramaMember struct {
	group   sarama.ConsumerGroup
	handler *saramaHandler
	cancel  context.CancelFunc
	stopped sync.WaitGroup
	failure error
}

func startSaramaMember(options Options, group, topic, member string) *saramaMember {
	config := saramaConfig("none")
	config.ClientID = group + "-" + member
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Offsets.AutoCommit.Enable = false
	consumerGroup, err := sarama.NewConsumerGroup(options.Bootstrap, group, config)
	must(err, "NewConsumerGroup")
	ctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{group: consumerGroup, cancel: cancel,
		handler: &saramaHandler{messages: make(chan *sarama.ConsumerMessage), sessions: make(chan sarama.ConsumerGroupSession, 4)}}
	m.stopped.Add(1)
	go func() {
		defer m.stopped.Done()
		for ctx.Err() == nil {
			if err := consumerGroup.Consume(ctx, []string{topic}, m.handler); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				m.failure = err
				return
			}
		}
	}()
	return m
}

// read checks records until the reader is done; returns the session that delivered the last.
func (m *saramaMember) read(reader *groupReader) sarama.ConsumerGroupSession {
	var session sarama.ConsumerGroupSession
	deadline := time.After(callTimeout)
	for !reader.done() {
		select {
		case session = <-m.handler.sessions:
		case message := <-m.handler.messages:
			headers := make([]Header, 0, len(message.Headers))
			for _, header := range message.Headers {
				headers = append(headers, Header{string(header.Key), header.Value})
			}
			reader.check(consumedRecord{message.Partition, message.Offset, message.Key, message.Value, headers,
				message.Timestamp.UnixMilli()})
		case <-deadline:
			panic(fmt.Errorf("consumed %d of %d records in %s (consume error: %v)", reader.consumed, reader.wanted, callTimeout, m.failure))
		}
	}
	// A rebalance may have begun a newer session since.
	for {
		select {
		case session = <-m.handler.sessions:
		default:
			return session
		}
	}
}

func (m *saramaMember) close() {
	m.cancel()
	must(m.group.Close(), "close the consumer group") // leaves the group
	m.stopped.Wait()
}

func saramaGroup(s *scenario, options Options, admin sarama.ClusterAdmin, topic string, produced Produced) {
	group := options.TopicPrefix + "-group"
	middle := middleOffsets(produced)

	first := startSaramaMember(options, group, topic, "first")
	starts := map[int32]int64{}
	for partition := range produced {
		starts[partition] = 0
	}
	session := first.read(newGroupReader(s, topic, produced, starts))
	for partition, offset := range middle {
		session.MarkOffset(topic, partition, offset, firstMemberMetadata)
	}
	session.Commit()
	first.close()

	groups, err := admin.ListConsumerGroups()
	must(err, "ListConsumerGroups")
	s.check(groups[group] == "consumer", "ListConsumerGroups names %s a consumer group: %q", group, groups[group])
	descriptions, err := admin.DescribeConsumerGroups([]string{group})
	must(err, "DescribeConsumerGroups")
	s.check(len(descriptions) == 1 && errors.Is(descriptions[0].Err, sarama.ErrNoError), "described %s: %+v", group, descriptions)
	s.check(descriptions[0].State == "Empty", "group empty after its member left: %s", descriptions[0].State)
	s.check(len(descriptions[0].Members) == 0, "no members after close")
	saramaCheckOffsets(s, admin, group, topic, middle, firstMemberMetadata)

	second := startSaramaMember(options, group, topic, "second")
	session = second.read(newGroupReader(s, topic, produced, middle))
	for partition, records := range produced {
		session.MarkOffset(topic, partition, int64(len(records)), "")
	}
	session.Commit()
	descriptions, err = admin.DescribeConsumerGroups([]string{group})
	must(err, "DescribeConsumerGroups")
	stable := descriptions[0]
	s.check(stable.State == "Stable", "group stable with its member: %s", stable.State)
	s.check(stable.ProtocolType == "consumer", "protocol type %q", stable.ProtocolType)
	s.check(len(stable.Members) == 1, "one member: %d", len(stable.Members))
	for _, member := range stable.Members {
		s.check(member.ClientId == group+"-second", "the member is the second: %s", member.ClientId)
		assignment, err := member.GetMemberAssignment()
		must(err, "GetMemberAssignment")
		s.check(len(assignment.Topics[topic]) == partitionsAfterGrowth, "the member has every partition: %v", assignment.Topics)
	}
	ends := map[int32]int64{}
	for partition, records := range produced {
		ends[partition] = int64(len(records))
	}
	saramaCheckOffsets(s, admin, group, topic, ends, "")
	second.close()

	must(admin.DeleteConsumerGroup(group), "DeleteConsumerGroup")
	groups, err = admin.ListConsumerGroups()
	must(err, "ListConsumerGroups")
	_, listed := groups[group]
	s.check(!listed, "%s gone after DeleteConsumerGroup", group)
}

func saramaCheckOffsets(s *scenario, admin sarama.ClusterAdmin, group, topic string, want map[int32]int64, metadata string) {
	partitions := make([]int32, 0, len(want))
	for partition := range want {
		partitions = append(partitions, partition)
	}
	fetched, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: partitions})
	must(err, "ListConsumerGroupOffsets")
	for partition, offset := range want {
		block := fetched.GetBlock(topic, partition)
		s.check(block != nil && errors.Is(block.Err, sarama.ErrNoError) && block.Offset == offset && block.Metadata == metadata,
			"partition %d committed at %d (%q), want %d (%q): %+v", partition, block.Offset, block.Metadata, offset, metadata, block)
	}
}
