// intake-events prints, one JSON object per line, everything of one kind that a
// fakeintake received, as Datadog's own parsers (fakeintake's aggregators) read
// it: events (/intake/), logs (/api/v2/logs), service checks (/api/v1/check_run)
// or metric series (/api/v2/series).
// The end-to-end tests use it so that Datadog's code, not ours, judges the
// payloads evrelay sends.
//
//	intake-events -url http://127.0.0.1:PORT [-kind events|logs|checks|metrics]
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
	kind := flag.String("kind", "events", "events, logs or checks")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: intake-events -url http://127.0.0.1:PORT [-kind events|logs|checks]")
		os.Exit(2)
	}
	c := client.NewClient(*url, client.WithoutStrictFakeintakeIDCheck())
	out := json.NewEncoder(os.Stdout)
	switch *kind {
	case "events":
		printEvents(c, out)
	case "logs":
		services, err := c.GetLogServiceNames()
		fail("reading log services", err)
		for _, service := range services {
			logs, err := c.FilterLogs(service)
			fail("parsing logs", err)
			for _, l := range logs {
				fail("writing", out.Encode(l))
			}
		}
	case "metrics":
		names, err := c.GetMetricNames()
		fail("reading metric names", err)
		for _, name := range names {
			series, err := c.FilterMetrics(name)
			fail("parsing series", err)
			for _, s := range series {
				fail("writing", out.Encode(s))
			}
		}
	case "checks":
		names, err := c.GetCheckRunNames()
		fail("reading check names", err)
		for _, name := range names {
			runs, err := c.GetCheckRun(name)
			fail("parsing check runs", err)
			for _, r := range runs {
				fail("writing", out.Encode(r))
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown -kind", *kind)
		os.Exit(2)
	}
}

func fail(what string, err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, what+":", err)
		os.Exit(1)
	}
}

func printEvents(c *client.Client, out *json.Encoder) {
	sources, err := c.GetEventSources()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading event sources:", err)
		os.Exit(1)
	}
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
