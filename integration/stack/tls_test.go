package stack

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGenerateTLS checks the generated files: the server certificate verifies against
// the CA for 127.0.0.1 and localhost (and not for another name), the client certificate
// verifies for client use, the keystore is key then chain, keys are private files, and a
// real mutual-TLS handshake between the two succeeds.
func TestGenerateTLS(t *testing.T) {
	f, err := GenerateTLS(t.TempDir())
	require.NoError(t, err)

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(f.CAFile)
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(caPEM))

	certs := func(path string) []*x509.Certificate {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		var out []*x509.Certificate
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				return out
			}
			if blk.Type == "CERTIFICATE" {
				c, err := x509.ParseCertificate(blk.Bytes)
				require.NoError(t, err)
				out = append(out, c)
			}
		}
	}
	srv := certs(f.ServerCertFile)
	require.Len(t, srv, 2, "server certificate then CA")
	for _, name := range []string{"127.0.0.1", "localhost", "::1"} {
		_, err := srv[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
		assert.NoError(t, err, "server certificate for %s", name)
	}
	_, err = srv[0].Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots})
	assert.Error(t, err, "the server certificate must not verify for another host")

	cli := certs(f.ClientCertFile)
	require.NotEmpty(t, cli)
	assert.Equal(t, ClientCN, cli[0].Subject.CommonName)
	_, err = cli[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err)
	_, err = cli[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	assert.Error(t, err, "the client certificate is for client use only")

	ks, err := os.ReadFile(f.ServerKeystoreFile)
	require.NoError(t, err)
	first, rest := pem.Decode(ks)
	require.NotNil(t, first)
	assert.Equal(t, "PRIVATE KEY", first.Type, "Kafka's PEM keystore starts with the PKCS#8 key")
	key, err := x509.ParsePKCS8PrivateKey(first.Bytes)
	require.NoError(t, err)
	second, _ := pem.Decode(rest)
	require.NotNil(t, second)
	leaf, err := x509.ParseCertificate(second.Bytes)
	require.NoError(t, err)
	ek, ok := key.(*ecdsa.PrivateKey)
	require.True(t, ok, "an ECDSA key")
	assert.True(t, ek.PublicKey.Equal(leaf.PublicKey), "the keystore's key belongs to its certificate")

	for _, p := range []string{f.ServerKeyFile, f.ServerKeystoreFile, f.ClientKeyFile} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), p)
	}

	// A mutual-TLS round trip over loopback with the generated files; without the client
	// certificate the server refuses the handshake.
	pair, err := tls.LoadX509KeyPair(f.ServerCertFile, f.ServerKeyFile)
	require.NoError(t, err)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: roots,
		ClientAuth: tls.RequireAndVerifyClientCert}
	for _, withCert := range []bool{true, false} {
		l, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
		require.NoError(t, err)
		defer l.Close()
		peer := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				peer <- err.Error()
				return
			}
			defer c.Close()
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				peer <- err.Error()
				return
			}
			peer <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			io.WriteString(c, "ok")
		}()
		cfg, err := f.ClientConfig(withCert)
		require.NoError(t, err)
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), cfg)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(c)
			c.Close()
		}
		if !withCert {
			assert.Error(t, err, "a client without a certificate is refused")
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, "ok", string(got))
		assert.Equal(t, ClientCN, <-peer)
	}
}
