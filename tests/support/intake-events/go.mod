module evrelay.invalid/intake-events

go 1.24.0

require github.com/DataDog/datadog-agent/test/fakeintake v0.72.2

require (
	github.com/DataDog/agent-payload/v5 v5.0.166 // indirect
	github.com/DataDog/datadog-agent/comp/core/tagger/origindetection v0.72.2 // indirect
	github.com/DataDog/datadog-agent/comp/netflow/payload v0.72.2 // indirect
	github.com/DataDog/datadog-agent/pkg/metrics v0.72.2 // indirect
	github.com/DataDog/datadog-agent/pkg/network/payload v0.72.2 // indirect
	github.com/DataDog/datadog-agent/pkg/networkpath/payload v0.72.2 // indirect
	github.com/DataDog/datadog-agent/pkg/proto v0.72.2 // indirect
	github.com/DataDog/datadog-agent/pkg/tagger/types v0.72.2 // indirect
	github.com/DataDog/mmh3 v0.0.0-20210722141835-012dc69a9e49 // indirect
	github.com/DataDog/zstd v1.5.6 // indirect
	github.com/DataDog/zstd_0 v0.0.0-20210310093942-586c1286621f // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/philhofer/fwd v1.2.0 // indirect
	github.com/planetscale/vtprotobuf v0.6.1-0.20240319094008-0393e58bdf10 // indirect
	github.com/samber/lo v1.51.0 // indirect
	github.com/tinylib/msgp v1.4.0 // indirect
	golang.org/x/text v0.30.0 // indirect
	google.golang.org/protobuf v1.36.9 // indirect
)
