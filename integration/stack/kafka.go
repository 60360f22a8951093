package stack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/faultproxy"
)

// DefaultKafkaVersion is the Apache Kafka release the launcher runs unless
// $SAMSA_KAFKA_VERSION or KafkaOptions.Version says otherwise.
const DefaultKafkaVersion = "4.1.1"

// KafkaOptions configures a test cluster. The zero value is a single combined
// broker+controller node.
type KafkaOptions struct {
	// Brokers is the number of nodes, each a combined broker and KRaft controller.
	// Default: 1. Use 3 for replication and broker-failure tests.
	Brokers int
	// Version of Apache Kafka. Default: $SAMSA_KAFKA_VERSION, else DefaultKafkaVersion.
	Version string
	// HeapMB is each JVM's maximum heap. Default: 384.
	HeapMB int
	// Props are broker properties that override or extend the launcher's test profile.
	Props map[string]string
	// Dir holds each node's config, data and log. Default: a temp dir removed by Close.
	Dir string
	// Proxied gives each node a second client listener, EXTERNAL, reached through a
	// fault proxy (Kafka.Proxy) whose address is what the listener advertises, so a
	// client bootstrapped at ProxiedBootstrap talks to every broker only through the
	// proxies, and a test can delay, black-hole or reset that traffic. Bootstrap stays
	// direct (inter-broker traffic, the launcher's and the test's own clients).
	Proxied bool
	// SASL gives each node a third client listener, SECURE: SASL_PLAINTEXT with
	// SCRAM-SHA-256 (SASLBootstrap), and turns on the StandardAuthorizer, so clients
	// there need a SCRAM user (AddSCRAMUser) and ACLs. The PLAINTEXT listener (Bootstrap),
	// the controller and inter-broker traffic stay unauthenticated, as the super user
	// User:ANONYMOUS: the test's own admin client creates users and ACLs through it.
	// With TLS too, SECURE is SASL_SSL (SCRAM over TLS, as production runs it) instead.
	SASL bool
	// TLS gives each node a client listener TLS (security.protocol=SSL, TLSBootstrap)
	// with certificates generated at start (TLSFiles: a throwaway CA and a server
	// certificate for 127.0.0.1 and localhost, read by the broker as PEM keystore and
	// truststore). Clients set security.protocol=SSL and ssl.ca.location to
	// TLSFiles().CAFile (TLSClientProps). Without MutualTLS the listener does not
	// authenticate clients: with SASL they are User:ANONYMOUS there, the super user.
	TLS bool
	// MutualTLS (with TLS) makes the TLS listener require a client certificate signed by
	// the CA (ssl.client.auth=required): clients also set ssl.certificate.location and
	// ssl.key.location (TLSClientProps), and with SASL their principal there is
	// "User:CN=" + ClientCN, which needs ACLs like any other user.
	MutualTLS bool
}

// Kafka is a running Apache Kafka cluster in KRaft mode on 127.0.0.1, started from the
// release jars on Maven Central. It is safe for concurrent use.
type Kafka struct {
	dir     string
	tempDir bool
	jars    string
	heapMB  int
	nodes   []*kafkaNode
	proxies []*faultproxy.Proxy // per node, with KafkaOptions.Proxied
	sasl    bool
	tls     *TLSFiles // with KafkaOptions.TLS
	mtls    bool

	closeOnce sync.Once
	closeErr  error
}

type kafkaNode struct {
	id         int32
	clientPort int
	saslPort   int // with KafkaOptions.SASL
	tlsPort    int // with KafkaOptions.TLS
	dir        string
	mu         sync.Mutex
	proc       *process
}

// KafkaJars returns the directory holding the jars of Kafka version v, downloading them
// with Maven into CacheDir() on first use. A second call downloads nothing.
func KafkaJars(ctx context.Context, version string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "kafka-"+version, "libs")
	marker := filepath.Join(dir, ".complete")
	err = withFileLock(filepath.Join(cache, "kafka.lock"), func() error {
		if _, err := os.Stat(marker); err == nil {
			return nil
		}
		mvn, err := exec.LookPath("mvn")
		if err != nil {
			return errors.New("stack: mvn not found: the real-broker tests fetch Apache Kafka from Maven Central with Maven; install JDK 17+ and Maven, or set KAFKA_BROKERS to a running cluster")
		}
		pom, err := toolsPath("kafka", "pom.xml")
		if err != nil {
			return err
		}
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", pom,
			"dependency:copy-dependencies", "-DincludeScope=runtime",
			"-Dkafka.version="+version, "-DoutputDirectory="+tmp)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("stack: download Kafka %s with Maven: %w\n%s", version, err, out)
		}
		if _, err := os.Stat(filepath.Join(tmp, "kafka_2.13-"+version+".jar")); err != nil {
			return fmt.Errorf("stack: Maven ran but kafka_2.13-%s.jar is missing from %s", version, tmp)
		}
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		return os.WriteFile(marker, []byte(version+"\n"), 0o644)
	})
	if err != nil {
		return "", err
	}
	return dir, nil
}

// toolsPath locates a file under integration/tools from this source file, so it works
// whatever the working directory of the test or command is.
func toolsPath(elem ...string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("stack: cannot locate the integration/tools directory")
	}
	p := filepath.Join(append([]string{filepath.Dir(file), "..", "tools"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return p, nil
}

// StartKafka downloads (once) and starts a KRaft cluster and waits until every broker
// answers metadata. Close it when done; the nodes also die with the test binary.
func StartKafka(ctx context.Context, opts KafkaOptions) (*Kafka, error) {
	if opts.Brokers == 0 {
		opts.Brokers = 1
	}
	if opts.Brokers < 1 || opts.Brokers > 9 {
		return nil, fmt.Errorf("stack: KafkaOptions.Brokers = %d, want 1..9", opts.Brokers)
	}
	if opts.Version == "" {
		opts.Version = os.Getenv("SAMSA_KAFKA_VERSION")
	}
	if opts.Version == "" {
		opts.Version = DefaultKafkaVersion
	}
	if opts.HeapMB == 0 {
		opts.HeapMB = 384
	}
	if opts.MutualTLS && !opts.TLS {
		return nil, errors.New("stack: KafkaOptions.MutualTLS needs KafkaOptions.TLS")
	}
	if _, err := exec.LookPath("java"); err != nil {
		return nil, errors.New("stack: java not found: the real-broker tests need JDK 17+, or set KAFKA_BROKERS to a running cluster")
	}
	jars, err := KafkaJars(ctx, opts.Version)
	if err != nil {
		return nil, err
	}
	k := &Kafka{dir: opts.Dir, jars: jars, heapMB: opts.HeapMB, sasl: opts.SASL}
	if opts.Proxied {
		for range opts.Brokers {
			// The target is set once the node's ports are known.
			px, err := faultproxy.Start("127.0.0.1:1")
			if err != nil {
				k.Close()
				return nil, fmt.Errorf("stack: %w", err)
			}
			k.proxies = append(k.proxies, px)
		}
	}
	if k.dir == "" {
		if k.dir, err = os.MkdirTemp("", "samsa-kafka-"); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		k.tempDir = true
	}
	if opts.TLS {
		if k.tls, err = GenerateTLS(filepath.Join(k.dir, "tls")); err != nil {
			k.Close()
			return nil, err
		}
		k.mtls = opts.MutualTLS
	}
	// A port taken between reservation and bind fails the start; retry with new ports.
	for attempt := 1; ; attempt++ {
		err = k.start(ctx, opts)
		if err == nil {
			return k, nil
		}
		k.killAll()
		if attempt == 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "Address already in use") {
			k.Close()
			return nil, err
		}
	}
}

func (k *Kafka) start(ctx context.Context, opts KafkaOptions) error {
	n := opts.Brokers
	ports, err := freePorts(5 * n) // client, controller, (proxied) external, (SASL) secure and TLS listener of each node
	if err != nil {
		return err
	}
	k.nodes = make([]*kafkaNode, n)
	var voters []string
	for i := range n {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i+1, ports[n+i]))
	}
	clusterID := newClusterID()
	for i := range n {
		node := &kafkaNode{id: int32(i + 1), clientPort: ports[i], dir: filepath.Join(k.dir, fmt.Sprintf("node-%d", i+1))}
		k.nodes[i] = node
		os.RemoveAll(node.dir)
		if err := os.MkdirAll(filepath.Join(node.dir, "data"), 0o755); err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		props := testBrokerProps(n)
		maps.Copy(props, map[string]string{
			"node.id":                  strconv.Itoa(i + 1),
			"process.roles":            "broker,controller",
			"controller.quorum.voters": strings.Join(voters, ","),
			"listeners":                fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", ports[i], ports[n+i]),
			"advertised.listeners":     fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", ports[i]),
			"log.dirs":                 filepath.Join(node.dir, "data"),
		})
		if opts.Proxied {
			ext := ports[2*n+i]
			k.proxies[i].SetTarget(hostPort(ext))
			props["listeners"] += fmt.Sprintf(",EXTERNAL://127.0.0.1:%d", ext)
			props["advertised.listeners"] += ",EXTERNAL://" + k.proxies[i].Addr()
			props["listener.security.protocol.map"] += ",EXTERNAL:PLAINTEXT"
		}
		if opts.SASL {
			sec := ports[3*n+i]
			props["listeners"] += fmt.Sprintf(",SECURE://127.0.0.1:%d", sec)
			props["advertised.listeners"] += fmt.Sprintf(",SECURE://127.0.0.1:%d", sec)
			props["listener.security.protocol.map"] += ",SECURE:" + k.SASLProtocol()
			maps.Copy(props, map[string]string{
				"sasl.enabled.mechanisms":                             "SCRAM-SHA-256",
				"listener.name.secure.sasl.enabled.mechanisms":        "SCRAM-SHA-256",
				"listener.name.secure.scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
				"authorizer.class.name":                               "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
				"super.users":                                         "User:ANONYMOUS",
				"allow.everyone.if.no.acl.found":                      "false",
			})
			node.saslPort = sec
		}
		if opts.TLS {
			port := ports[4*n+i]
			props["listeners"] += fmt.Sprintf(",TLS://127.0.0.1:%d", port)
			props["advertised.listeners"] += fmt.Sprintf(",TLS://127.0.0.1:%d", port)
			props["listener.security.protocol.map"] += ",TLS:SSL"
			// Kafka reads PEM files directly; the key is unencrypted PKCS#8, so no
			// ssl.key.password. These apply to every SSL listener (SECURE too).
			maps.Copy(props, map[string]string{
				"ssl.keystore.type":       "PEM",
				"ssl.keystore.location":   k.tls.ServerKeystoreFile,
				"ssl.truststore.type":     "PEM",
				"ssl.truststore.location": k.tls.CAFile,
			})
			if opts.MutualTLS {
				props["listener.name.tls.ssl.client.auth"] = "required"
			}
			node.tlsPort = port
		}
		maps.Copy(props, opts.Props)
		if err := writeProps(filepath.Join(node.dir, "server.properties"), props); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(node.dir, "log4j2.properties"), []byte(log4j2Config), 0o644); err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		format := k.javaArgv(node, "kafka.tools.StorageTool", "format", "-t", clusterID, "-c", filepath.Join(node.dir, "server.properties"))
		cmd := exec.CommandContext(ctx, format[0], format[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("stack: format KRaft storage of node %d: %w\n%s", node.id, err, out)
		}
	}
	for _, node := range k.nodes {
		if err := k.launch(node); err != nil {
			return err
		}
	}
	return k.waitReady(ctx, n, 90*time.Second)
}

// testBrokerProps is the test profile: replication fitted to the cluster size, no
// initial rebalance delay, and session-timeout floors low enough that crash tests do not
// wait the production 45 s (classic and KIP-848 groups alike).
func testBrokerProps(n int) map[string]string {
	rf := strconv.Itoa(n)
	minISR := "1"
	if n >= 3 {
		minISR = "2"
	}
	return map[string]string{
		"controller.listener.names":                        "CONTROLLER",
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"num.partitions":                                   "1",
		"default.replication.factor":                       rf,
		"min.insync.replicas":                              minISR,
		"offsets.topic.replication.factor":                 rf,
		"offsets.topic.num.partitions":                     "10",
		"transaction.state.log.replication.factor":         rf,
		"transaction.state.log.min.isr":                    minISR,
		"transaction.state.log.num.partitions":             "10",
		"share.coordinator.state.topic.replication.factor": rf,
		"share.coordinator.state.topic.min.isr":            minISR,
		"unclean.leader.election.enable":                   "false",
		"auto.create.topics.enable":                        "false",
		"group.initial.rebalance.delay.ms":                 "0",
		"group.min.session.timeout.ms":                     "1000",
		"group.consumer.min.session.timeout.ms":            "1000",
		"group.consumer.session.timeout.ms":                "6000",
		"group.consumer.min.heartbeat.interval.ms":         "100",
		"group.consumer.heartbeat.interval.ms":             "500",
		"num.network.threads":                              "2",
		"num.io.threads":                                   "2",
		"num.recovery.threads.per.data.dir":                "1",
		"log.flush.interval.messages":                      "9223372036854775807",
		"delete.topic.enable":                              "true",
	}
}

// log4j2Config keeps broker output to warnings, so a failure's log tail is readable.
const log4j2Config = `status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
`

func writeProps(path string, props map[string]string) error {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(props)) {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return nil
}

func (k *Kafka) javaArgv(node *kafkaNode, main string, args ...string) []string {
	argv := []string{"java",
		"-Xms64m", fmt.Sprintf("-Xmx%dm", k.heapMB),
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:ActiveProcessorCount=2",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(node.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.jars, "*"),
		main}
	return append(argv, args...)
}

func (k *Kafka) launch(node *kafkaNode) error {
	argv := k.javaArgv(node, "kafka.Kafka", filepath.Join(node.dir, "server.properties"))
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.proc != nil && node.proc.running() {
		return fmt.Errorf("stack: kafka node %d is already running (pid %d)", node.id, node.proc.PID())
	}
	if node.proc == nil {
		p, err := startProcess(fmt.Sprintf("kafka node %d", node.id), filepath.Join(node.dir, "kafka.log"), nil, argv...)
		if err != nil {
			return err
		}
		node.proc = p
		return nil
	}
	return node.proc.start(nil, argv...)
}

// waitReady waits until the cluster's metadata lists want brokers, polling through every
// node's client port so it works while some nodes are down.
func (k *Kafka) waitReady(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		for _, node := range k.nodes {
			if p := node.process(); p != nil && !p.running() && want == len(k.nodes) {
				return fmt.Errorf("stack: kafka node %d exited during start; log tail:\n%s", node.id, p.logTail(6000))
			}
		}
		last = k.checkBrokers(want)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stack: kafka not ready after %s: %v; node 1 log tail:\n%s", timeout, last, k.nodes[0].proc.logTail(4000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (k *Kafka) checkBrokers(want int) error {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{
		"bootstrap.servers": k.Bootstrap(),
		"log_level":         0,
		"socket.timeout.ms": 3000,
	})
	if err != nil {
		return err
	}
	defer ac.Close()
	md, err := ac.GetMetadata(nil, false, 3000)
	if err != nil {
		return err
	}
	if len(md.Brokers) < want {
		return fmt.Errorf("%d of %d brokers registered", len(md.Brokers), want)
	}
	return nil
}

// newClusterID returns a random KRaft cluster id (base64url of 16 bytes). One starting
// with '-' would be read as an option by the storage tool's argument parser, so those are
// drawn again.
func newClusterID() string {
	for {
		var b [16]byte
		rand.Read(b[:])
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}

// Bootstrap is the comma-separated list of every node's client address, suitable for
// bootstrap.servers and KAFKA_BROKERS.
func (k *Kafka) Bootstrap() string {
	addrs := make([]string, len(k.nodes))
	for i, n := range k.nodes {
		addrs[i] = hostPort(n.clientPort)
	}
	return strings.Join(addrs, ",")
}

// ProxiedBootstrap is the comma-separated list of every node's proxy address (see
// KafkaOptions.Proxied); empty when the cluster is not proxied.
func (k *Kafka) ProxiedBootstrap() string {
	addrs := make([]string, len(k.proxies))
	for i, px := range k.proxies {
		addrs[i] = px.Addr()
	}
	return strings.Join(addrs, ",")
}

// SASLBootstrap is the comma-separated list of every node's SASL/SCRAM listener (see
// KafkaOptions.SASL); empty when the cluster has none. Clients there set
// security.protocol to SASLProtocol() (with TLS, also ssl.ca.location),
// sasl.mechanisms=SCRAM-SHA-256, sasl.username and sasl.password.
func (k *Kafka) SASLBootstrap() string {
	if !k.sasl {
		return ""
	}
	addrs := make([]string, len(k.nodes))
	for i, n := range k.nodes {
		addrs[i] = hostPort(n.saslPort)
	}
	return strings.Join(addrs, ",")
}

// SASLProtocol is the security.protocol of the SECURE listener: SASL_SSL when the
// cluster also has TLS, else SASL_PLAINTEXT.
func (k *Kafka) SASLProtocol() string {
	if k.tls != nil {
		return "SASL_SSL"
	}
	return "SASL_PLAINTEXT"
}

// TLSBootstrap is the comma-separated list of every node's TLS listener (see
// KafkaOptions.TLS); empty when the cluster has none.
func (k *Kafka) TLSBootstrap() string {
	if k.tls == nil {
		return ""
	}
	addrs := make([]string, len(k.nodes))
	for i, n := range k.nodes {
		addrs[i] = hostPort(n.tlsPort)
	}
	return strings.Join(addrs, ",")
}

// TLSFiles are the certificates the cluster was started with (KafkaOptions.TLS), nil
// without TLS.
func (k *Kafka) TLSFiles() *TLSFiles { return k.tls }

// TLSClientProps are the librdkafka properties of a client of the TLS listener:
// security.protocol=SSL and ssl.ca.location, plus ssl.certificate.location and
// ssl.key.location with KafkaOptions.MutualTLS. With SASL, they are also what a client
// of the SECURE listener (SASL_SSL) needs besides security.protocol and its SASL
// settings. Nil without TLS. The map is new on each call.
func (k *Kafka) TLSClientProps() map[string]any {
	if k.tls == nil {
		return nil
	}
	m := map[string]any{"security.protocol": "SSL", "ssl.ca.location": k.tls.CAFile}
	if k.mtls {
		m["ssl.certificate.location"] = k.tls.ClientCertFile
		m["ssl.key.location"] = k.tls.ClientKeyFile
	}
	return m
}

// AddSCRAMUser creates (or changes the password of) SCRAM-SHA-256 user, through the
// unauthenticated super-user listener.
func (k *Kafka) AddSCRAMUser(ctx context.Context, user, password string) error {
	if !k.sasl {
		return errors.New("stack: the cluster was started without KafkaOptions.SASL")
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": k.Bootstrap(), "log_level": 3})
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	defer ac.Close()
	salt := make([]byte, 16)
	rand.Read(salt)
	res, err := ac.AlterUserScramCredentials(ctx, []kafka.UserScramCredentialUpsertion{{
		User: user, ScramCredentialInfo: kafka.ScramCredentialInfo{Mechanism: kafka.ScramMechanismSHA256, Iterations: 4096},
		Password: []byte(password), Salt: salt,
	}}, nil)
	if err != nil {
		return fmt.Errorf("stack: add SCRAM user %q: %w", user, err)
	}
	if e := res.Errors[user]; e.Code() != kafka.ErrNoError {
		return fmt.Errorf("stack: add SCRAM user %q: %v", user, e)
	}
	return nil
}

// Proxy is the fault proxy in front of node id's EXTERNAL listener (see
// KafkaOptions.Proxied).
func (k *Kafka) Proxy(id int32) (*faultproxy.Proxy, error) {
	if len(k.proxies) == 0 {
		return nil, errors.New("stack: the cluster was started without KafkaOptions.Proxied")
	}
	if _, err := k.node(id); err != nil {
		return nil, err
	}
	return k.proxies[id-1], nil
}

// NodeIDs lists the cluster's node ids (1..n).
func (k *Kafka) NodeIDs() []int32 {
	ids := make([]int32, len(k.nodes))
	for i, n := range k.nodes {
		ids[i] = n.id
	}
	return ids
}

func (k *Kafka) node(id int32) (*kafkaNode, error) {
	if id < 1 || int(id) > len(k.nodes) {
		return nil, fmt.Errorf("stack: no kafka node %d (cluster has %d)", id, len(k.nodes))
	}
	return k.nodes[id-1], nil
}

func (n *kafkaNode) process() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// Addr is node id's client address.
func (k *Kafka) Addr(id int32) (string, error) {
	n, err := k.node(id)
	if err != nil {
		return "", err
	}
	return hostPort(n.clientPort), nil
}

// PID is node id's process id, 0 when it is not running.
func (k *Kafka) PID(id int32) int {
	n, err := k.node(id)
	if err != nil || n.process() == nil || !n.process().running() {
		return 0
	}
	return n.process().PID()
}

// StopBroker shuts node id down cleanly (SIGTERM: controlled shutdown), waiting up to 30 s.
func (k *Kafka) StopBroker(id int32) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	return n.process().stop(30 * time.Second)
}

// KillBroker hard-kills node id (SIGKILL), as a crash would.
func (k *Kafka) KillBroker(id int32) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	return n.process().kill()
}

// PauseBroker freezes node id (SIGSTOP); ResumeBroker thaws it.
func (k *Kafka) PauseBroker(id int32) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	return n.process().signal(syscall.SIGSTOP)
}

// ResumeBroker continues a node frozen by PauseBroker.
func (k *Kafka) ResumeBroker(id int32) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	return n.process().signal(syscall.SIGCONT)
}

// StartBroker restarts a stopped or killed node with its data and ports, and waits until
// the cluster lists every broker again.
func (k *Kafka) StartBroker(ctx context.Context, id int32) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	if err := k.launch(n); err != nil {
		return err
	}
	// A JVM restart with log recovery took 45 s on this two-core machine under load.
	if err := waitTCP(n.process(), hostPort(n.clientPort), 2*time.Minute); err != nil {
		return err
	}
	return k.waitReady(ctx, len(k.nodes), 2*time.Minute)
}

func (k *Kafka) killAll() {
	for _, n := range k.nodes {
		if p := n.process(); p != nil {
			p.kill()
		}
	}
}

// Close stops every node (SIGKILL: the data is thrown away) and removes a temp dir. It is
// idempotent.
func (k *Kafka) Close() error {
	k.closeOnce.Do(func() {
		var errs []error
		for _, n := range k.nodes {
			if p := n.process(); p != nil {
				errs = append(errs, p.kill())
			}
		}
		for _, px := range k.proxies {
			errs = append(errs, px.Close())
		}
		if k.tempDir {
			errs = append(errs, os.RemoveAll(k.dir))
		}
		k.closeErr = errors.Join(errs...)
	})
	return k.closeErr
}
