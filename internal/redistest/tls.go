package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLSServer is a redis-server that accepts only TLS connections, with a
// throwaway certificate authority that signed its certificate and a client
// certificate (the server requires one, as Redis does by default).
type TLSServer struct {
	*Server
	// PEM files in a temporary directory, for tools such as redis-cli or
	// the rqgo command.
	CAFile, CertFile, KeyFile     string // CA; server certificate and key
	ClientCertFile, ClientKeyFile string
	CAPool                        *x509.CertPool
	ClientCert                    tls.Certificate
}

// StartTLS generates a CA, a server certificate for 127.0.0.1 and localhost
// and a client certificate, and starts redis-server with --tls-port on a
// free port and no plain-text port.
func StartTLS(t testing.TB) *TLSServer {
	t.Helper()
	dir := t.TempDir()
	ca, caKey, caPEM := newCert(t, nil, nil, "rqgo test CA", true)
	_, srvKey, srvPEM := newCert(t, ca, caKey, "127.0.0.1", false)
	_, cliKey, cliPEM := newCert(t, ca, caKey, "rqgo test client", false)
	s := &TLSServer{
		CAFile:         writeFile(t, dir, "ca.crt", caPEM),
		CertFile:       writeFile(t, dir, "server.crt", srvPEM),
		KeyFile:        writeFile(t, dir, "server.key", keyPEM(t, srvKey)),
		ClientCertFile: writeFile(t, dir, "client.crt", cliPEM),
		ClientKeyFile:  writeFile(t, dir, "client.key", keyPEM(t, cliKey)),
		CAPool:         x509.NewCertPool(),
	}
	s.CAPool.AddCert(ca)
	cc, err := tls.LoadX509KeyPair(s.ClientCertFile, s.ClientKeyFile)
	if err != nil {
		t.Fatalf("loading the client certificate: %v", err)
	}
	s.ClientCert = cc
	s.Server = retryPorts(t, func() (*Server, error) {
		port := FreePort(t)
		srv := launch(t, port, []string{"--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", s.CertFile, "--tls-key-file", s.KeyFile, "--tls-ca-cert-file", s.CAFile})
		return srv, srv.waitReady(func(ctx context.Context) error {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: s.ClientTLS(), MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		})
	})
	return s
}

// ClientTLS returns a TLS configuration that trusts the CA and presents the
// client certificate.
func (s *TLSServer) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.CAPool, Certificates: []tls.Certificate{s.ClientCert}, MinVersion: tls.VersionTLS12}
}

// Client returns a TLS client of the server, closed when the test ends.
func (s *TLSServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: s.ClientTLS()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// newCert makes a certificate signed by parent (self-signed when parent is
// nil) and returns it, its key and its PEM.
func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating a key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatalf("generating a serial number: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatalf("creating certificate %q: %v", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing certificate %q: %v", cn, err)
	}
	return cert, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func keyPEM(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("encoding a key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
