// intake-events prints, one JSON object per line, every event that a fakeintake
// received on /intake/, as Datadog's own parser (fakeintake's aggregator) reads
// them. The end-to-end tests use it so that Datadog's code, not ours, judges the
// payloads evrelay sends.
//
//	intake-events -url http://127.0.0.1:PORT
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/DataDog/datadog-agent/test/fakeintake/client"
)

type parsed struct {
	Source         string   `json:"source"`
	Title          string   `json:"msg_title"`
	Text           string   `json:"msg_text"`
	Timestamp      int64    `json:"timestamp"`
	Priority       string   `json:"priority"`
	Host           string   `json:"host"`
	Tags           []string `json:"tags"`
	AlertType      string   `json:"alert_type"`
	AggregationKey string   `json:"aggregation_key"`
	SourceTypeName string   `json:"source_type_name"`
	EventType      string   `json:"event_type"`
}

func main() {
	url := flag.String("url", "", "fakeintake base URL")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: intake-events -url http://127.0.0.1:PORT")
		os.Exit(2)
	}
	c := client.NewClient(*url, client.WithoutStrictFakeintakeIDCheck())
	sources, err := c.GetEventSources()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading event sources:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for _, source := range sources {
		events, err := c.FilterEvents(source)
		if err != nil {
			fmt.Fprintln(os.Stderr, "parsing events:", err)
			os.Exit(1)
		}
		for _, e := range events {
			if err := out.Encode(parsed{
				Source: e.Source, Title: e.Title, Text: e.Text, Timestamp: e.Ts,
				Priority: string(e.Priority), Host: e.Host, Tags: e.Tags,
				AlertType: string(e.AlertType), AggregationKey: e.AggregationKey,
				SourceTypeName: e.SourceTypeName, EventType: e.EventType,
			}); err != nil {
				os.Exit(1)
			}
		}
	}
}
