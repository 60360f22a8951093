package registry_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/internal/testpb"
)

type purchase struct {
	User   string `avro:"user" json:"user"`
	Amount int64  `avro:"amount" json:"amount"`
	Note   string `avro:"note" json:"note"`
}

func mockClient(t *testing.T) *registry.Client {
	t.Helper()
	c, err := registry.NewClient(registry.Config{URL: "mock://" + t.Name()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundTripMock(t *testing.T) {
	c := mockClient(t)
	in := purchase{User: "ada", Amount: 4200, Note: "héllo"}

	t.Run("avro", func(t *testing.T) {
		cd, err := registry.Avro[purchase](c, "purchases", registry.Options{})
		require.NoError(t, err)
		b, err := cd.Encode(in)
		require.NoError(t, err)
		assert.Equal(t, byte(0), b[0], "magic byte")
		out, err := cd.Decode(b)
		require.NoError(t, err)
		assert.Equal(t, in, out)
	})
	t.Run("jsonschema", func(t *testing.T) {
		cd, err := registry.JSONSchema[purchase](c, "purchases-json", registry.Options{Validate: true})
		require.NoError(t, err)
		b, err := cd.Encode(in)
		require.NoError(t, err)
		assert.Contains(t, string(b[5:]), `"user":"ada"`)
		out, err := cd.Decode(b)
		require.NoError(t, err)
		assert.Equal(t, in, out)
	})
	t.Run("protobuf", func(t *testing.T) {
		cd, err := registry.Protobuf[*testpb.Order](c, "orders", registry.Options{})
		require.NoError(t, err)
		o := &testpb.Order{Id: "o-1", AmountCents: 1999, Items: []string{"a", "b"}}
		b, err := cd.Encode(o)
		require.NoError(t, err)
		out, err := cd.Decode(b)
		require.NoError(t, err)
		assert.True(t, proto.Equal(o, out), "got %v", out)
	})
}

func TestDecodeRejectsBadFraming(t *testing.T) {
	c := mockClient(t)
	cd, err := registry.Avro[purchase](c, "purchases", registry.Options{})
	require.NoError(t, err)
	good, err := cd.Encode(purchase{User: "u"})
	require.NoError(t, err)

	unknownID := append([]byte{0, 0x7f, 0, 0, 1}, good[5:]...)
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"empty":      {[]byte{}, "empty input"},
		"magic byte": {append([]byte{'{'}, good[1:]...), "wrong magic byte 0x7b"},
		"short":      {[]byte{0, 0, 0}, "shorter than the schema-registry header"},
		"unknown ID": {unknownID, "schema ID 2130706433"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cd.Decode(tc.data)
			var de *codec.DecodeError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "avro", de.Codec)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotErrorIs(t, err, codec.ErrUnavailable, "a bad record is not an outage")
		})
	}
}

func TestSubjectStrategies(t *testing.T) {
	for _, tc := range []struct {
		o       registry.Options
		subject string
	}{
		{registry.Options{}, "topic-a-value"},
		{registry.Options{Key: true}, "topic-a-key"},
		{registry.Options{Subject: registry.TopicRecordName}, "topic-a-purchase"},
		{registry.Options{Subject: registry.RecordName}, "purchase"},
	} {
		t.Run(tc.subject, func(t *testing.T) {
			c := mockClient(t)
			cd, err := registry.Avro[purchase](c, "topic-a", tc.o)
			require.NoError(t, err)
			b, err := cd.Encode(purchase{User: "u"})
			require.NoError(t, err)
			id, _, err := c.Latest(tc.subject)
			require.NoError(t, err, "schema registered under %s", tc.subject)
			assert.Equal(t, b[1:5], []byte{0, 0, 0, byte(id)})
		})
	}
}

func TestUseLatestAndCompatibility(t *testing.T) {
	c := mockClient(t)
	const subject = "events-value"
	v1 := `{"type":"record","name":"purchase","fields":[{"name":"user","type":"string"},{"name":"amount","type":"long"},{"name":"note","type":"string","default":""}]}`
	id, err := c.Register(subject, registry.Schema{Type: "AVRO", Text: v1})
	require.NoError(t, err)
	require.NoError(t, c.SetCompatibility(subject, "BACKWARD"))
	level, err := c.Compatibility(subject)
	require.NoError(t, err)
	assert.Equal(t, "BACKWARD", level)

	cd, err := registry.Avro[purchase](c, "events", registry.Options{UseLatest: true})
	require.NoError(t, err)
	b, err := cd.Encode(purchase{User: "u", Amount: 1})
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 0, 0, byte(id)}, b[1:5], "encoded with the registered schema")

	assert.Error(t, c.SetCompatibility(subject, "SIDEWAYS"))
}

func TestConfigValidate(t *testing.T) {
	err := registry.Config{URL: "ftp://x", Username: "u", RequestTimeout: -1, CacheCapacity: -1}.Validate()
	require.Error(t, err)
	for _, want := range []string{"not an http(s) URL", "Username and Config.Password", "negative", "CacheCapacity"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.ErrorContains(t, registry.Config{}.Validate(), "URL is empty")
	_, err = registry.NewClient(registry.Config{})
	assert.Error(t, err)
}

func TestConstructorsRejectWrongTypes(t *testing.T) {
	c := mockClient(t)
	_, err := registry.Avro[*purchase](c, "t", registry.Options{})
	assert.ErrorContains(t, err, "must be a struct type")
	_, err = registry.JSONSchema[*purchase](c, "t", registry.Options{})
	assert.ErrorContains(t, err, "must not be a pointer")
	_, err = registry.Avro[purchase](c, "t", registry.Options{Subject: 9})
	assert.ErrorContains(t, err, "unknown SubjectStrategy")
}

// An unreachable registry, and one answering 503, are outages: the error matches
// codec.ErrUnavailable, so a processor waits instead of dead-lettering good records.
func TestUnavailableIsClassified(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedURL := "http://" + l.Addr().String()
	l.Close()

	var hits atomic.Int32
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error_code":401,"message":"Unauthorized"}`))
	}))
	defer denied.Close()
	notFound := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error_code":40403,"message":"Schema not found"}`))
	}))
	defer notFound.Close()

	frame := []byte{0, 0, 0, 0, 7, 2, 'x'}
	for name, tc := range map[string]struct {
		url         string
		unavailable bool
	}{
		"refused":   {closedURL, true},
		"503":       {busy.URL, true},
		"401":       {denied.URL, true},
		"not found": {notFound.URL, false},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := registry.NewClient(registry.Config{URL: tc.url, Retries: 1, RetryWait: time.Millisecond, RequestTimeout: 2 * time.Second})
			require.NoError(t, err)
			defer c.Close()
			cd, err := registry.Avro[purchase](c, "t", registry.Options{})
			require.NoError(t, err)

			_, derr := cd.Decode(frame)
			_, eerr := cd.Encode(purchase{User: "u"})
			for _, err := range []error{derr, eerr} {
				require.Error(t, err)
				assert.Equal(t, tc.unavailable, errors.Is(err, codec.ErrUnavailable), "%v", err)
			}
			if !tc.unavailable {
				var re *registry.Error
				require.ErrorAs(t, derr, &re)
				assert.True(t, re.NotFound())
				assert.Contains(t, derr.Error(), "schema ID 7")
			}
		})
	}
	assert.GreaterOrEqual(t, hits.Load(), int32(4), "503 retried: 2 attempts for each of 2 calls")
}

func TestIncompatibleErrorMessage(t *testing.T) {
	err := &registry.IncompatibleError{Subject: "s-value", Compatibility: "BACKWARD", Detail: "reader field x has no default"}
	assert.Equal(t, `schema for subject "s-value" is incompatible with its registered versions under compatibility BACKWARD: reader field x has no default`, err.Error())
	assert.False(t, strings.Contains((&registry.Error{Code: 1}).Error(), "%"))
}

func TestExplicitSubjectAndSchemaByID(t *testing.T) {
	c := mockClient(t)
	cd, err := registry.Avro[purchase](c, "events", registry.Options{SubjectName: "purchase.created"})
	require.NoError(t, err)
	b, err := cd.Encode(purchase{User: "u"})
	require.NoError(t, err)
	id, latest, err := c.Latest("purchase.created")
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 0, 0, byte(id)}, b[1:5])
	s, err := c.SchemaByID(id)
	require.NoError(t, err)
	assert.Equal(t, latest, s)
	assert.Equal(t, "AVRO", s.Type)
	assert.Contains(t, s.Text, `"amount"`)
}

// A registry that accepts connections but does not answer (a hung or paused process)
// times out as an outage.
func TestHungRegistryTimesOutAsUnavailable(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	c, err := registry.NewClient(registry.Config{URL: hung.URL, Retries: -1, RequestTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	cd, err := registry.Avro[purchase](c, "t", registry.Options{})
	require.NoError(t, err)
	start := time.Now()
	_, err = cd.Decode([]byte{0, 0, 0, 0, 7, 2, 'x'})
	assert.ErrorIs(t, err, codec.ErrUnavailable)
	assert.Less(t, time.Since(start), 5*time.Second)
}

// After its first record a codec writes framing + plain encoding itself instead of
// calling the serializer (which derives the schema on every call): its output must be
// byte for byte what the serializer writes.
func TestFastEncodeMatchesSerializer(t *testing.T) {
	c := mockClient(t)
	values := []purchase{{}, {User: "a"}, {User: "bé", Amount: -1, Note: strings.Repeat("x", 300)}, {User: "c", Amount: 1 << 40}}
	type mk func() (codec.Codec[purchase], error)
	for name, build := range map[string]mk{
		"avro": func() (codec.Codec[purchase], error) { return registry.Avro[purchase](c, "fast", registry.Options{}) },
		"jsonschema": func() (codec.Codec[purchase], error) {
			return registry.JSONSchema[purchase](c, "fast-js", registry.Options{})
		},
	} {
		t.Run(name, func(t *testing.T) {
			warm, err := build()
			require.NoError(t, err)
			for _, v := range values {
				got, err := warm.Encode(v) // the first goes through the serializer, then fast
				require.NoError(t, err)
				fresh, err := build()
				require.NoError(t, err)
				want, err := fresh.Encode(v) // always the serializer: its first call
				require.NoError(t, err)
				assert.Equal(t, want, got, "%+v", v)
				back, err := warm.Decode(got)
				require.NoError(t, err)
				assert.Equal(t, v, back)
			}
		})
	}
	t.Run("protobuf", func(t *testing.T) {
		warm, err := registry.Protobuf[*testpb.Order](c, "fast-pb", registry.Options{})
		require.NoError(t, err)
		for i := range 4 {
			o := &testpb.Order{Id: strings.Repeat("o", i*50), AmountCents: int64(i) << 33, Items: make([]string, i)}
			got, err := warm.Encode(o)
			require.NoError(t, err)
			fresh, err := registry.Protobuf[*testpb.Order](c, "fast-pb", registry.Options{})
			require.NoError(t, err)
			want, err := fresh.Encode(o)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		}
	})
}

// Basic auth and TLS reach the registry as configured: the server sees the credentials,
// and the client trusts the server through Config.TLS (without it the handshake fails).
func TestBasicAuthAndTLS(t *testing.T) {
	var user, pass atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		user.Store(u)
		pass.Store(p)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"compatibilityLevel":"FULL"}`))
	}))
	defer srv.Close()

	c, err := registry.NewClient(registry.Config{URL: srv.URL, Username: "svc", Password: "s3cret",
		TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig, Retries: -1})
	require.NoError(t, err)
	defer c.Close()
	level, err := c.Compatibility("s")
	require.NoError(t, err)
	assert.Equal(t, "FULL", level)
	assert.Equal(t, "svc", user.Load())
	assert.Equal(t, "s3cret", pass.Load())

	untrusting, err := registry.NewClient(registry.Config{URL: srv.URL, Retries: -1})
	require.NoError(t, err)
	defer untrusting.Close()
	_, err = untrusting.Compatibility("s")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate")
}

// The registry password (and a password in the URL's user info) never appears in an
// error: refused credentials, an unreachable registry, a bad record, a bad config.
func TestCanaryPasswordNeverInErrors(t *testing.T) {
	const canary = "canary-pw-7f3a9e"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedURL := "http://" + l.Addr().String()
	l.Close()
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error_code":401,"message":"Unauthorized"}`))
	}))
	defer denied.Close()
	var errs []error
	withUser := strings.Replace(closedURL, "http://", "http://svc:"+canary+"@", 1)
	for _, url := range []string{denied.URL, closedURL, withUser} {
		c, err := registry.NewClient(registry.Config{URL: url, Username: "svc", Password: canary, Retries: 1, RetryWait: time.Millisecond, RequestTimeout: time.Second})
		require.NoError(t, err)
		cd, err := registry.Avro[purchase](c, "t", registry.Options{})
		require.NoError(t, err)
		_, derr := cd.Decode([]byte{0, 0, 0, 0, 7, 2, 'x'})
		_, eerr := cd.Encode(purchase{User: "u"})
		_, rerr := cd.Decode([]byte{9, 9})
		errs = append(errs, derr, eerr, rerr)
		c.Close()
	}
	_, err = registry.NewClient(registry.Config{URL: "http://svc:" + canary + "@%zz", Password: canary})
	errs = append(errs, err, registry.Config{Password: canary}.Validate())
	for i, err := range errs {
		require.Error(t, err, "case %d", i)
		assert.NotContains(t, err.Error(), canary, "case %d: %v", i, err)
		assert.NotContains(t, fmt.Sprintf("%+v", err), canary, "case %d", i)
	}
}
