// Package kconf builds librdkafka configuration maps: the framework's settings, the
// user's pass-through overrides, and the keys the framework must own (rejected in
// overrides). It also renders maps for logs with secrets redacted.
package kconf

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Map is a librdkafka configuration: property name to value (string, int, bool).
type Map map[string]any

// Owned maps a property the framework sets itself to the reason a user may not override it.
type Owned map[string]string

// CheckOverrides reports every override that names an owned key or is not a string, int,
// bool or float, each with the reason.
func CheckOverrides(overrides map[string]any, owned Owned, field string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		if why, ok := owned[k]; ok {
			errs = append(errs, fmt.Errorf("%s[%q]: the framework owns this setting (%s)", field, k, why))
			continue
		}
		switch overrides[k].(type) {
		case string, int, int32, int64, bool, float64:
		default:
			errs = append(errs, fmt.Errorf("%s[%q]: value of type %T, want string, int, bool or float64", field, k, overrides[k]))
		}
	}
	return errs
}

// Build merges defaults, then overrides, then owned settings (which always win) into a
// kafka.ConfigMap.
func Build(defaults, overrides, owned Map) *kafka.ConfigMap {
	cm := make(kafka.ConfigMap, len(defaults)+len(overrides)+len(owned))
	for _, m := range []Map{defaults, overrides, owned} {
		for k, v := range m {
			cm[k] = v
		}
	}
	return &cm
}

// sensitive matches librdkafka's secret-bearing properties (_RK_SENSITIVE and friends).
func sensitive(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"password", "secret", "sasl.oauthbearer.config", "ssl.key.pem", "ssl.keystore", "ssl_key", "ssl.certificate.pem", "token", "credentials"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// Redacted renders m for a log line: keys sorted, secret values replaced by "[redacted]".
func Redacted(m map[string]any) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(" ")
		}
		v := fmt.Sprint(m[k])
		if sensitive(k) {
			v = "[redacted]"
		}
		fmt.Fprintf(&b, "%s=%s", k, v)
	}
	return b.String()
}

// ClientID is the default client.id of the framework's clients: "<name>@<host>/<pid>"
// (name: the group), so a group's member list tells processes apart; librdkafka's own
// default is "rdkafka" for every client.
func ClientID(name string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s@%s/%d", name, host, os.Getpid())
}

// ForwardLogs writes librdkafka's log events to log until logs is closed (when the client
// is closed). Syslog levels map to slog levels: 0-3 error, 4 warning, 5 (notice) info,
// 6-7 (librdkafka's informational chatter and debug) debug.
func ForwardLogs(log *slog.Logger, logs chan kafka.LogEvent) {
	for ev := range logs {
		level := slog.LevelDebug
		switch {
		case ev.Level <= 3:
			level = slog.LevelError
		case ev.Level == 4:
			level = slog.LevelWarn
		case ev.Level == 5:
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "librdkafka: "+ev.Message, "client", ev.Name, "tag", ev.Tag)
	}
}
