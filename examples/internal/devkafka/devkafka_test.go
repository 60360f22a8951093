package devkafka_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// The examples are programs to copy: none links the test kit (samsatest, and with it
// the testing package's flags) into its binary.
func TestExamplesDoNotLinkTheTestKit(t *testing.T) {
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	out, err := exec.Command(goBin, "list", "-f", "{{if eq .Name \"main\"}}{{.ImportPath}}{{end}}", "github.com/samsa-go/samsa/examples/...").Output()
	require.NoError(t, err)
	mains := strings.Fields(string(out))
	require.GreaterOrEqual(t, len(mains), 5, "the examples' main packages: %v", mains)
	for _, m := range mains {
		deps, err := exec.Command(goBin, "list", "-deps", m).Output()
		require.NoError(t, err, m)
		assert.NotContains(t, strings.Fields(string(deps)), "github.com/samsa-go/samsa/samsatest", "%s links the test kit", m)
	}
}

// Without $KAFKA_BROKERS, Brokers starts an in-process broker with the topics, and
// ReadAll reads back what was produced there.
func TestBrokersInProcess(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokers, stop, err := devkafka.Brokers(ctx, devkafka.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer stop()
	out := processor.NewOutput("t", codec.String(), codec.String())
	p, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, out)
	require.NoError(t, err)
	require.NoError(t, p.Send(ctx, "k", "v"))
	p.Close()
	recs, err := devkafka.ReadAll(ctx, brokers, "t", codec.String(), codec.String())
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.Equal(t, "v", recs[0].Value)
}
