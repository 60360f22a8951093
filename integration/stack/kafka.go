package stack

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
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

// KafkaOptions configures a test cluster. The zero value is one node, a combined broker
// and KRaft controller.
type KafkaOptions struct {
	Brokers int               // nodes, each broker and controller; default 1, 3 for replication and failure tests
	Version string            // Apache Kafka release; default $SAMSA_KAFKA_VERSION, else DefaultKafkaVersion
	HeapMB  int               // each JVM's maximum heap; default 384
	Props   map[string]string // broker properties overriding or extending the launcher's test profile
	Dir     string            // each node's config, data and log; default a temp dir removed by Close
	// Proxied adds a client listener EXTERNAL per node that advertises a fault proxy
	// (Kafka.Proxy) in front of it: a client bootstrapped at ProxiedBootstrap reaches every
	// broker only through the proxies, whose traffic a test can delay, black-hole or reset.
	// Bootstrap stays direct (inter-broker traffic, the launcher's and the test's clients).
	Proxied bool
	// SASL adds a listener SECURE per node (SASLBootstrap): SCRAM-SHA-256 over
	// SASL_PLAINTEXT, or over SASL_SSL with TLS (as production runs it), and turns on the
	// StandardAuthorizer, so clients there need a SCRAM user (AddSCRAMUser) and ACLs. The
	// PLAINTEXT listener (Bootstrap), the controller and inter-broker traffic stay
	// unauthenticated, as the super user User:ANONYMOUS: the test's own admin client
	// creates users and ACLs through it.
	SASL bool
	// TLS adds a listener TLS per node (security.protocol=SSL, TLSBootstrap) with
	// certificates generated at start (TLSFiles: a throwaway CA and a server certificate
	// for 127.0.0.1 and localhost, read by the broker as PEM keystore and truststore).
	// Clients trust TLSFiles().CAFile (TLSClientProps). Without MutualTLS the listener does
	// not authenticate clients: with SASL they are User:ANONYMOUS there, the super user.
	TLS bool
	// MutualTLS (with TLS) makes the TLS listener require a client certificate signed by
	// the CA (ssl.client.auth=required; TLSClientProps sets it); with SASL the principal
	// there is "User:CN=" + ClientCN, which needs ACLs like any other user.
	MutualTLS bool
}

// Kafka is a running Apache Kafka cluster in KRaft mode on 127.0.0.1, started from the
// release jars on Maven Central. It is safe for concurrent use.
type Kafka struct {
	opts    KafkaOptions // with the defaults filled in
	dir     string
	tempDir bool
	jars    string
	nodes   []*kafkaNode
	proxies []*faultproxy.Proxy // per node, with KafkaOptions.Proxied
	tls     *TLSFiles           // with KafkaOptions.TLS

	closeOnce sync.Once
	closeErr  error
}

type kafkaNode struct {
	id         int32
	advertised map[string]string // listener name (PLAINTEXT, EXTERNAL, SECURE, TLS) → address
	dir        string
	mu         sync.Mutex // serialises launch
	proc       *process
}

// KafkaJars returns the directory holding the jars of Kafka version v,
// CacheDir()/kafka-<version>/libs, downloading them with Maven (integration/tools/kafka/pom.xml)
// on first use. A second call downloads nothing.
func KafkaJars(ctx context.Context, version string) (string, error) {
	marker, err := cached("kafka", "kafka-"+version, "libs/.complete", func(dst string) error {
		mvn, err := exec.LookPath("mvn")
		if err != nil {
			return errors.New("stack: mvn not found: the real-broker tests fetch Apache Kafka from Maven Central with Maven; install JDK 17+ and Maven, or set KAFKA_BROKERS to a running cluster")
		}
		pom, err := toolsPath("kafka", "pom.xml")
		if err != nil {
			return err
		}
		libs := filepath.Join(dst, "libs")
		out, err := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", pom, "dependency:copy-dependencies",
			"-DincludeScope=runtime", "-Dkafka.version="+version, "-DoutputDirectory="+libs).CombinedOutput()
		if err != nil {
			return fmt.Errorf("stack: download Kafka %s with Maven: %w\n%s", version, err, out)
		}
		if _, err := os.Stat(filepath.Join(libs, "kafka_2.13-"+version+".jar")); err != nil {
			return fmt.Errorf("stack: Maven ran but kafka_2.13-%s.jar is missing from %s", version, libs)
		}
		return os.WriteFile(filepath.Join(libs, ".complete"), []byte(version+"\n"), 0o644)
	})
	if err != nil {
		return "", err
	}
	return filepath.Dir(marker), nil
}

// StartKafka downloads (once) and starts a KRaft cluster and waits until every broker
// answers metadata. Close it when done; the nodes also die with the test binary.
func StartKafka(ctx context.Context, opts KafkaOptions) (*Kafka, error) {
	opts.Brokers = cmp.Or(opts.Brokers, 1)
	opts.Version = cmp.Or(opts.Version, os.Getenv("SAMSA_KAFKA_VERSION"), DefaultKafkaVersion)
	opts.HeapMB = cmp.Or(opts.HeapMB, 384)
	if opts.Brokers < 1 || opts.Brokers > 9 {
		return nil, fmt.Errorf("stack: KafkaOptions.Brokers = %d, want 1..9", opts.Brokers)
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
	k := &Kafka{opts: opts, jars: jars}
	if k.dir, k.tempDir, err = dataDir(opts.Dir, "kafka"); err != nil {
		return nil, err
	}
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
	if opts.TLS {
		if k.tls, err = GenerateTLS(filepath.Join(k.dir, "tls")); err != nil {
			k.Close()
			return nil, err
		}
	}
	// A port taken between reservation and bind fails the start; retry with new ports.
	err = retryPorts(func() error {
		err := k.start(ctx)
		if err != nil {
			k.killAll()
			if ctx.Err() == nil && strings.Contains(err.Error(), "Address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
		}
		return err
	})
	if err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

func (k *Kafka) start(ctx context.Context) error {
	opts, n := k.opts, k.opts.Brokers
	ports, err := freePorts(5 * n) // client, controller, (proxied) external, (SASL) secure and TLS listener of each node
	if err != nil {
		return err
	}
	k.nodes = nil
	var voters []string
	for i := range n {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i+1, ports[n+i]))
	}
	clusterID := newClusterID()
	for i := range n {
		dir := filepath.Join(k.dir, fmt.Sprintf("node-%d", i+1))
		node := &kafkaNode{id: int32(i + 1), dir: dir, advertised: map[string]string{"PLAINTEXT": hostPort(ports[i])},
			proc: &process{name: fmt.Sprintf("kafka node %d", i+1), logPath: filepath.Join(dir, "kafka.log")}}
		k.nodes = append(k.nodes, node)
		os.RemoveAll(node.dir)
		if err := os.MkdirAll(filepath.Join(node.dir, "data"), 0o755); err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		props := testBrokerProps(n)
		maps.Copy(props, map[string]string{
			"node.id":                  strconv.Itoa(i + 1),
			"process.roles":            "broker,controller",
			"controller.quorum.voters": strings.Join(voters, ","),
			"listeners":                fmt.Sprintf("PLAINTEXT://%s,CONTROLLER://%s", hostPort(ports[i]), hostPort(ports[n+i])),
			"advertised.listeners":     "PLAINTEXT://" + hostPort(ports[i]),
			"log.dirs":                 filepath.Join(node.dir, "data"),
		})
		// listener adds a listener on port, advertised at addr, speaking protocol.
		listener := func(name string, port int, addr, protocol string) {
			props["listeners"] += fmt.Sprintf(",%s://%s", name, hostPort(port))
			props["advertised.listeners"] += fmt.Sprintf(",%s://%s", name, addr)
			props["listener.security.protocol.map"] += fmt.Sprintf(",%s:%s", name, protocol)
			node.advertised[name] = addr
		}
		if opts.Proxied {
			k.proxies[i].SetTarget(hostPort(ports[2*n+i]))
			listener("EXTERNAL", ports[2*n+i], k.proxies[i].Addr(), "PLAINTEXT")
		}
		if opts.SASL {
			listener("SECURE", ports[3*n+i], hostPort(ports[3*n+i]), k.SASLProtocol())
			maps.Copy(props, map[string]string{
				"sasl.enabled.mechanisms":                             "SCRAM-SHA-256",
				"listener.name.secure.sasl.enabled.mechanisms":        "SCRAM-SHA-256",
				"listener.name.secure.scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
				"authorizer.class.name":                               "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
				"super.users":                                         "User:ANONYMOUS",
				"allow.everyone.if.no.acl.found":                      "false",
			})
		}
		if opts.TLS {
			listener("TLS", ports[4*n+i], hostPort(ports[4*n+i]), "SSL")
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
		}
		maps.Copy(props, opts.Props)
		var conf strings.Builder
		for _, key := range slices.Sorted(maps.Keys(props)) {
			fmt.Fprintf(&conf, "%s=%s\n", key, props[key])
		}
		for name, data := range map[string]string{"server.properties": conf.String(), "log4j2.properties": log4j2Config} {
			if err := writeFile(filepath.Join(node.dir, name), []byte(data), 0o644); err != nil {
				return err
			}
		}
		format := k.javaArgv(node, "kafka.tools.StorageTool", "format", "-t", clusterID, "-c", filepath.Join(node.dir, "server.properties"))
		if out, err := exec.CommandContext(ctx, format[0], format[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("stack: format KRaft storage of node %d: %w\n%s", node.id, err, out)
		}
	}
	for _, node := range k.nodes {
		if err := k.launch(node); err != nil {
			return err
		}
	}
	return k.waitReady(ctx, 90*time.Second)
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

func (k *Kafka) javaArgv(node *kafkaNode, main string, args ...string) []string {
	argv := []string{"java",
		"-Xms64m", fmt.Sprintf("-Xmx%dm", k.opts.HeapMB),
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:ActiveProcessorCount=2",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(node.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.jars, "*"),
		main}
	return append(argv, args...)
}

func (k *Kafka) launch(node *kafkaNode) error {
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.proc.running() {
		return fmt.Errorf("stack: kafka node %d is already running (pid %d)", node.id, node.proc.PID())
	}
	return node.proc.start(nil, k.javaArgv(node, "kafka.Kafka", filepath.Join(node.dir, "server.properties"))...)
}

// waitReady waits until the cluster's metadata lists every broker, polling through every
// node's client port.
func (k *Kafka) waitReady(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, timeout, 250*time.Millisecond, func(context.Context) error {
		cfg := kafka.ConfigMap{"bootstrap.servers": k.Bootstrap(), "log_level": 0, "socket.timeout.ms": 3000}
		ac, err := kafka.NewAdminClient(&cfg)
		if err != nil {
			return err
		}
		defer ac.Close()
		md, err := ac.GetMetadata(nil, false, 3000)
		if err == nil && len(md.Brokers) < len(k.nodes) {
			err = fmt.Errorf("%d of %d brokers registered", len(md.Brokers), len(k.nodes))
		}
		return err
	}, k.procs()...)
}

func (k *Kafka) procs() []*process {
	procs := make([]*process, len(k.nodes))
	for i, n := range k.nodes {
		procs[i] = n.proc
	}
	return procs
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
func (k *Kafka) Bootstrap() string { return k.bootstrap("PLAINTEXT") }

// bootstrap joins every node's advertised address of listener with commas, "" when the
// cluster has no such listener.
func (k *Kafka) bootstrap(listener string) string {
	var addrs []string
	for _, n := range k.nodes {
		if addr, ok := n.advertised[listener]; ok {
			addrs = append(addrs, addr)
		}
	}
	return strings.Join(addrs, ",")
}

// ProxiedBootstrap is the comma-separated list of every node's proxy address (see
// KafkaOptions.Proxied); empty when the cluster is not proxied.
func (k *Kafka) ProxiedBootstrap() string { return k.bootstrap("EXTERNAL") }

// SASLBootstrap is the comma-separated list of every node's SASL/SCRAM listener (see
// KafkaOptions.SASL); empty when the cluster has none. Clients there set
// security.protocol to SASLProtocol() (with TLS, also ssl.ca.location),
// sasl.mechanisms=SCRAM-SHA-256, sasl.username and sasl.password.
func (k *Kafka) SASLBootstrap() string { return k.bootstrap("SECURE") }

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
func (k *Kafka) TLSBootstrap() string { return k.bootstrap("TLS") }

// TLSFiles are the certificates the cluster was started with (KafkaOptions.TLS), nil
// without TLS.
func (k *Kafka) TLSFiles() *TLSFiles { return k.tls }

// TLSClientProps are a new map of the librdkafka properties of a TLS listener client:
// security.protocol=SSL, ssl.ca.location and, with MutualTLS, ssl.certificate.location
// and ssl.key.location; a SECURE (SASL_SSL) client needs them too, with its own
// security.protocol and SASL settings. Nil without TLS.
func (k *Kafka) TLSClientProps() map[string]any {
	if k.tls == nil {
		return nil
	}
	m := map[string]any{"security.protocol": "SSL", "ssl.ca.location": k.tls.CAFile}
	if k.opts.MutualTLS {
		m["ssl.certificate.location"] = k.tls.ClientCertFile
		m["ssl.key.location"] = k.tls.ClientKeyFile
	}
	return m
}

// AddSCRAMUser creates (or changes the password of) SCRAM-SHA-256 user, through the
// unauthenticated super-user listener.
func (k *Kafka) AddSCRAMUser(ctx context.Context, user, password string) error {
	if !k.opts.SASL {
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

// Addr is node id's client address.
func (k *Kafka) Addr(id int32) (string, error) {
	n, err := k.node(id)
	if err != nil {
		return "", err
	}
	return n.advertised["PLAINTEXT"], nil
}

// PID is node id's process id, 0 when it is not running.
func (k *Kafka) PID(id int32) int {
	n, err := k.node(id)
	if err != nil || !n.proc.running() {
		return 0
	}
	return n.proc.PID()
}

// StopBroker shuts node id down cleanly (SIGTERM: controlled shutdown), waiting up to 30 s.
func (k *Kafka) StopBroker(id int32) error {
	return k.onNode(id, func(p *process) error { return p.stop(30 * time.Second) })
}

// KillBroker hard-kills node id (SIGKILL), as a crash would.
func (k *Kafka) KillBroker(id int32) error { return k.onNode(id, (*process).kill) }

// PauseBroker freezes node id (SIGSTOP); ResumeBroker thaws it.
func (k *Kafka) PauseBroker(id int32) error {
	return k.onNode(id, func(p *process) error { return p.signal(syscall.SIGSTOP) })
}

// ResumeBroker continues a node frozen by PauseBroker.
func (k *Kafka) ResumeBroker(id int32) error {
	return k.onNode(id, func(p *process) error { return p.signal(syscall.SIGCONT) })
}

func (k *Kafka) onNode(id int32, fn func(*process) error) error {
	n, err := k.node(id)
	if err != nil {
		return err
	}
	return fn(n.proc)
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
	if err := poll(ctx, 2*time.Minute, 100*time.Millisecond, dialable(n.advertised["PLAINTEXT"]), n.proc); err != nil {
		return err
	}
	return k.waitReady(ctx, 2*time.Minute)
}

func (k *Kafka) killAll() error {
	var errs []error
	for _, p := range k.procs() {
		errs = append(errs, p.kill())
	}
	return errors.Join(errs...)
}

// Close stops every node (SIGKILL: the data is thrown away) and removes a temp dir. It is
// idempotent.
func (k *Kafka) Close() error {
	k.closeOnce.Do(func() {
		errs := []error{k.killAll()}
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
