// otel-peer: the forwarder evrelay is measured against, and the intake that
// records what it delivers. Built by `scripts/dev-cluster build-peer`; used only by
// the side-by-side bench (tests/bench_peer.rs).
//
//	otel-peer --config FILE   the OpenTelemetry Collector, cut to what the bench
//	                          runs: k8seventsreceiver -> batch -> otlphttp
//	otel-peer record          an OTLP/HTTP logs intake on 127.0.0.1:0; prints
//	                          "listening <port>", then one line per log record:
//	                          "<arrival unix ms> <k8s.event.uid> <k8s.event.count>"
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/k8seventsreceiver"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/receiver"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "record" {
		record()
		return
	}
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otel-peer", Description: "k8sevents -> batch -> otlphttp", Version: "0.111.0"},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{envprovider.NewFactory(), fileprovider.NewFactory()},
				DefaultScheme:     "env",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatal(err)
	}
}

func factories() (otelcol.Factories, error) {
	var f otelcol.Factories
	var err error
	if f.Receivers, err = receiver.MakeFactoryMap(k8seventsreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Processors, err = processor.MakeFactoryMap(batchprocessor.NewFactory()); err != nil {
		return f, err
	}
	if f.Exporters, err = exporter.MakeFactoryMap(otlphttpexporter.NewFactory()); err != nil {
		return f, err
	}
	if f.Extensions, err = extension.MakeFactoryMap(); err != nil {
		return f, err
	}
	f.Connectors, err = connector.MakeFactoryMap()
	return f, err
}

func record() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	fmt.Fprintf(out, "listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	out.Flush()
	http.HandleFunc("/v1/logs", func(w http.ResponseWriter, r *http.Request) {
		at := time.Now().UnixMilli()
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := plogotlp.NewExportRequest()
		if err := req.UnmarshalProto(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		logs := req.Logs().ResourceLogs()
		for i := 0; i < logs.Len(); i++ {
			rl := logs.At(i)
			uid := str(rl.Resource().Attributes(), "k8s.event.uid")
			scopes := rl.ScopeLogs()
			for j := 0; j < scopes.Len(); j++ {
				records := scopes.At(j).LogRecords()
				for k := 0; k < records.Len(); k++ {
					lr := records.At(k)
					id := uid
					if id == "" {
						id = str(lr.Attributes(), "k8s.event.uid")
					}
					count := lr.Attributes().AsRaw()["k8s.event.count"]
					fmt.Fprintf(out, "%d %s %v\n", at, id, count)
				}
			}
		}
		out.Flush()
		mu.Unlock()
		resp, _ := plogotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(resp)
	})
	log.Fatal(http.Serve(ln, nil))
}

func str(m pcommon.Map, key string) string {
	if v, ok := m.Get(key); ok {
		return v.AsString()
	}
	return ""
}
