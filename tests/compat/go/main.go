// Command compat runs Karst's compatibility scenario (issue 11) with the Go clients: franz-go
// (kgo for produce and consume, kadm for admin) and Sarama, one after the other, against a
// running broker or cluster that has automatic topic creation turned off. Each client:
//
//  1. admin: brokers, create a topic with configs, describe it, alter and describe configs,
//     add partitions, the errors for an existing topic and a bad config;
//  2. produce keyed records with headers in every compression codec;
//  3. consume them back by partition and check every record by offset; then in a consumer
//     group: commit, close, resume exactly after the commit in a new member, the group listed,
//     described and deleted by the admin (groups.go); the offsets ListOffsets reports;
//  4. a missing topic: describe, describe configs, delete and produce fail with
//     UNKNOWN_TOPIC_OR_PARTITION;
//  5. delete the topic, after which it is missing too.
//
// Usage: compat --bootstrap HOST:PORT[,...] --brokers N --replication-factor R
// --topic-prefix NAME [--clients franz,sarama]. Prints one line per step; exits 1 naming
// the failed step.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// Every admin call, produce and consume loop is bounded by this.
const callTimeout = 30 * time.Second

// Metadata and configs reach every node of a cluster within this (eventual reads).
const propagationTimeout = 20 * time.Second

// Options are the command line, shared by both clients' scenarios.
type Options struct {
	Bootstrap         []string
	Brokers           int
	ReplicationFactor int16
	TopicPrefix       string
}

// scenario is one client's run; steps count the checks that held.
type scenario struct {
	client string
	checks int
}

func (s *scenario) check(condition bool, format string, args ...any) {
	if !condition {
		panic(fmt.Errorf("check failed: "+format, args...))
	}
	s.checks++
}

func (s *scenario) step(name string, run func()) {
	started := time.Now()
	before := s.checks
	run()
	fmt.Printf("ok  %-7s %-45s %4d checks %6d ms\n", s.client, name, s.checks-before, time.Since(started).Milliseconds())
}

// eventually polls attempt until it returns true, for at most propagationTimeout.
func eventually(what string, attempt func() bool) {
	deadline := time.Now().Add(propagationTimeout)
	for !attempt() {
		if time.Now().After(deadline) {
			panic(fmt.Errorf("timed out after %s waiting for %s", propagationTimeout, what))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(err error, what string) {
	if err != nil {
		panic(fmt.Errorf("%s: %w", what, err))
	}
}

func main() {
	bootstrap := flag.String("bootstrap", "", "bootstrap servers, comma-separated")
	brokers := flag.Int("brokers", 1, "brokers the cluster has")
	replicationFactor := flag.Int("replication-factor", 1, "replication factor of the scenario's topic")
	topicPrefix := flag.String("topic-prefix", "go", "prefix of the scenario's topic names")
	clients := flag.String("clients", "franz,sarama", "clients to run, comma-separated")
	flag.Parse()
	options := Options{
		Bootstrap:         strings.Split(*bootstrap, ","),
		Brokers:           *brokers,
		ReplicationFactor: int16(*replicationFactor),
		TopicPrefix:       *topicPrefix,
	}
	runners := map[string]func(*scenario, Options){"franz": runFranz, "sarama": runSarama}
	for _, client := range strings.Split(*clients, ",") {
		runner, known := runners[client]
		if !known {
			fmt.Printf("FAILED: unknown client %q\n", client)
			os.Exit(2)
		}
		s := &scenario{client: client}
		if !run(s, runner, Options{options.Bootstrap, options.Brokers, options.ReplicationFactor,
			options.TopicPrefix + "-" + client}) {
			os.Exit(1)
		}
		fmt.Printf("go %s scenario: all %d checks held\n", client, s.checks)
	}
}

func run(s *scenario, runner func(*scenario, Options), options Options) (passed bool) {
	defer func() {
		if failure := recover(); failure != nil {
			fmt.Printf("FAILED %s: %v\n", s.client, failure)
			passed = false
		}
	}()
	runner(s, options)
	return true
}
