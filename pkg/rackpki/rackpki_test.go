package rackpki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/rackpki"
)

var now = time.Now()

// member issues id a certificate of ca and writes it, with the CA, into a
// directory of its own, as rack setup would; it returns the loaded trust.
func member(t *testing.T, ca *rackpki.CA, id rackpki.Identity) rackpki.Trust {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, now, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := rackpki.WriteKeyPair(dir, "member", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	trust, err := rackpki.LoadTrust(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "member.crt"), filepath.Join(dir, "member.key"))
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

// handshake runs one TLS handshake over loopback between a server with
// server's trust and a client with client's config; it returns the
// identity the server saw, and each side's error.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (rackpki.Identity, error, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		id  rackpki.Identity
		err error
	}
	served := make(chan result, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			served <- result{err: err}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			served <- result{err: err}
			return
		}
		id, err := rackpki.PeerIdentity(tc.ConnectionState())
		served <- result{id: id, err: err}
		tc.Write([]byte{1}) //nolint:errcheck // the client's read tells
	}()
	conn, clientErr := tls.Dial("tcp", lis.Addr().String(), client)
	if clientErr == nil {
		// TLS 1.3: the server's verdict on the client's certificate comes
		// with the first read, its byte or its alert.
		_, clientErr = io.ReadFull(conn, make([]byte, 1))
		conn.Close()
	}
	r := <-served
	return r.id, r.err, clientErr
}

// S1, S2: a nexus replica reaches the sled it means to reach, and the sled
// sees a nexus; the identity is the certificate's URI, whatever the address.
func TestS2_MutualTLSNamesBothSidesByTheirRackIdentity(t *testing.T) {
	ca, err := rackpki.NewCA("rack-1", now)
	if err != nil {
		t.Fatal(err)
	}
	sledID := rackpki.Identity{Kind: rackpki.Sled, ID: "6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a11"}
	nexusID := rackpki.Identity{Kind: rackpki.Nexus, ID: "7b6d2f8f-1e6d-4e1f-8b4f-2f1d5f1c8b22"}
	sled, nexus := member(t, ca, sledID), member(t, ca, nexusID)

	seen, serverErr, clientErr := handshake(t, sled.ServerConfig(), nexus.ClientConfig(&sledID))
	if serverErr != nil || clientErr != nil || seen != nexusID {
		t.Fatalf("nexus → its sled: server saw %v (%v), client %v", seen, serverErr, clientErr)
	}

	other := rackpki.Identity{Kind: rackpki.Sled, ID: "another-sled"}
	if _, _, clientErr := handshake(t, sled.ServerConfig(), nexus.ClientConfig(&other)); clientErr == nil ||
		!strings.Contains(clientErr.Error(), "not sled/another-sled") {
		t.Fatalf("nexus reaching the wrong sled: %v; want the handshake refused naming who answered", clientErr)
	}
}

// S2: a server of the rack refuses a client without a certificate, or
// with one of another CA, and a client refuses a server of another CA.
func TestS2_AClientOrServerOutsideTheRackIsRefused(t *testing.T) {
	ca, err := rackpki.NewCA("rack-1", now)
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, err := rackpki.NewCA("rack-2", now)
	if err != nil {
		t.Fatal(err)
	}
	sledID := rackpki.Identity{Kind: rackpki.Sled, ID: "s1"}
	sled := member(t, ca, sledID)
	foreign := member(t, foreignCA, rackpki.Identity{Kind: rackpki.Nexus, ID: "n1"})
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // the attacker's client

	for name, client := range map[string]*tls.Config{"no certificate": noCert, "another CA": foreign.ClientConfig(nil)} {
		// Refused by the handshake itself, not merely found to name nobody.
		if _, serverErr, _ := handshake(t, sled.ServerConfig(), client); serverErr == nil || errors.Is(serverErr, rackpki.ErrNoIdentity) {
			t.Errorf("a client with %s was let in (%v)", name, serverErr)
		}
	}
	// The foreign member as a server: the rack's client refuses it.
	nexus := member(t, ca, rackpki.Identity{Kind: rackpki.Nexus, ID: "n2"})
	if _, _, clientErr := handshake(t, foreign.ServerConfig(), nexus.ClientConfig(nil)); clientErr == nil {
		t.Fatalf("the rack's client accepted a server of another CA")
	}
}

// S1: keys are written readable by their owner only; a CA round-trips
// through its files; ids that would make an ambiguous URI are refused.
func TestS1_KeysAreTheOwnersAloneAndTheCAReloads(t *testing.T) {
	ca, err := rackpki.NewCA("rack-1", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := rackpki.WriteKeyPair(dir, "ca", ca.CertPEM(), keyPEM); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"ca.key": 0o600, "ca.crt": 0o644} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.Mode().Perm() != want {
			t.Fatalf("%s: %v (%v); want %v", name, info.Mode().Perm(), err, want)
		}
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	keyPEM, _ = os.ReadFile(filepath.Join(dir, "ca.key"))
	reloaded, err := rackpki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	id := rackpki.Identity{Kind: rackpki.Operator, ID: "alice"}
	issued := member(t, reloaded, id)
	if got, err := rackpki.IdentityOf(issued.Own.Leaf); err != nil || got != id {
		t.Fatalf("the reloaded CA issued %v (%v); want %v", got, err, id)
	}
	for _, bad := range []string{"", "a/b", "a b"} {
		if _, _, err := ca.Issue(rackpki.Identity{Kind: rackpki.Sled, ID: bad}, now); err == nil {
			t.Errorf("issued a certificate for id %q", bad)
		}
	}
}

// S1: a certificate names one rack identity or none: two rackplane URIs,
// an unknown kind or an id Issue would refuse name nobody, whatever their
// order, so no certificate reads as whichever identity comes first.
func TestS1_ACertificateNamingTwoIdentitiesOrAMalformedOneNamesNobody(t *testing.T) {
	ca, err := rackpki.NewCA("rack-1", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, uris := range [][]string{
		{"rackplane:sled/a", "rackplane:nexus/b"},
		{"rackplane:nexus/b", "rackplane:sled/a"},
		{"rackplane:Sled/a", "rackplane:sled/c"},
		{"rackplane:sled/a/b"},
		{"rackplane:sled/a%2Fb"},
		{"rackplane:sled/"},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, parsed)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, leafKey.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := rackpki.IdentityOf(cert); !errors.Is(err, rackpki.ErrNoIdentity) {
			t.Errorf("a certificate with URIs %v names %v (%v), want nobody", uris, id, err)
		}
	}
}

// S1: what the CA issues never outlives it, and an expired CA issues
// nothing, rather than leaves every member would refuse.
func TestS1_ACertificateNeverOutlivesItsCA(t *testing.T) {
	ca, err := rackpki.NewCA("rack-1", now)
	if err != nil {
		t.Fatal(err)
	}
	late := ca.Cert.NotAfter.Add(-24 * time.Hour)
	certPEM, _, err := ca.Issue(rackpki.Identity{Kind: rackpki.Sled, ID: "s1"}, late)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("a certificate issued a day before the CA expires lasts until %s, past the CA's %s", leaf.NotAfter, ca.Cert.NotAfter)
	}
	if _, _, err := ca.Issue(rackpki.Identity{Kind: rackpki.Sled, ID: "s2"}, ca.Cert.NotAfter.Add(time.Hour)); err == nil ||
		!strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired CA issued a certificate (%v); want it refused", err)
	}
}
