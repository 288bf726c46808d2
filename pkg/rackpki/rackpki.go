// Package rackpki is the rack's certificate authority and the identities it
// issues (SPEC S1): a sled-agent's certificate names its sled id, a nexus
// replica's its zone id, an operator's its name, each as a URI SAN
// (rackplane:sled/<id>, rackplane:nexus/<id>, rackplane:operator/<name>).
// The TLS configurations it builds require a certificate of the rack's CA
// on both sides (S2) and tell who the peer is by that URI, not by host
// name: sleds and replicas move between addresses, their ids do not.
//
// Only crypto/x509 and crypto/tls: ECDSA P-256 keys, TLS 1.3.
package rackpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Kind is what an identity is.
type Kind string

// The kinds of identity the rack CA issues.
const (
	Sled     Kind = "sled"
	Nexus    Kind = "nexus"
	Operator Kind = "operator"
)

// Identity is who a certificate speaks for.
type Identity struct {
	Kind Kind
	ID   string
}

func (i Identity) String() string {
	if i.ID == "" {
		return string(i.Kind) + "/*"
	}
	return string(i.Kind) + "/" + i.ID
}

// uri is the identity's URI SAN.
func (i Identity) uri() *url.URL {
	return &url.URL{Scheme: "rackplane", Opaque: string(i.Kind) + "/" + i.ID}
}

// ErrNoIdentity means a certificate names no rack identity.
var ErrNoIdentity = errors.New("the certificate names no rack identity")

// IdentityOf reads the rack identity a certificate names: exactly one
// rackplane: URI, of a known kind, with an id as Issue writes them. A
// certificate naming two identities, or one it could not have issued,
// names nobody rather than whichever comes first.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "rackplane" {
			continue
		}
		kind, id, ok := strings.Cut(u.Opaque, "/")
		switch k := Kind(kind); {
		case !ok || !validID(id) || u.RawQuery != "" || u.Fragment != "":
			return Identity{}, fmt.Errorf("%w: malformed URI %q", ErrNoIdentity, u)
		case k == Sled || k == Nexus || k == Operator:
			found = append(found, Identity{Kind: k, ID: id})
		default:
			return Identity{}, fmt.Errorf("%w: unknown kind in %q", ErrNoIdentity, u)
		}
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("%w: %d rack identities named", ErrNoIdentity, len(found))
	}
	return found[0], nil
}

// validID is what an identity's id may be: non-empty, without '/', '%' or
// spaces, so that its URI reads back as exactly that id.
func validID(id string) bool { return id != "" && !strings.ContainsAny(id, "/% ") }

// Validity of what the CA issues.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 2 * 365 * 24 * time.Hour
	// clockSkew backdates every certificate, so a peer whose clock is a
	// little behind still accepts it.
	clockSkew = time.Hour
)

// CA is the rack's certificate authority.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA makes a rack CA.
func NewCA(rack string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "rackplane rack " + rack + " CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// LoadCA reads a CA from its certificate and key, PEM-encoded.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !pair.Leaf.IsCA {
		return nil, errors.New("the certificate is not a CA's")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the CA key cannot sign")
	}
	return &CA{Cert: pair.Leaf, key: signer}, nil
}

// CertPEM is the CA's certificate, PEM-encoded: what every member trusts.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the CA's private key, PEM-encoded.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Issue makes a certificate for id, valid as a server and as a client,
// with hosts (IP addresses or DNS names) besides its identity.
func (ca *CA) Issue(id Identity, now time.Time, hosts ...string) (certPEM, keyPEM []byte, err error) {
	if !validID(id.ID) {
		return nil, nil, fmt.Errorf("identity %q: the id must be non-empty, without '/', '%%' or spaces", id)
	}
	// A certificate outliving its CA would be refused from the CA's end
	// on, whatever it says: it is issued no longer than the CA lasts, and
	// an expired CA issues nothing.
	if !now.Before(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("the rack CA expired at %s; it can issue nothing", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.String()},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.uri()},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// WriteKeyPair writes name.crt and name.key into dir, each durably; the
// key is readable by its owner only (0600), and never logged.
func WriteKeyPair(dir, name string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, name+".key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, name+".crt"), certPEM, 0o644)
}

// writeFile replaces path with data through a temporary file, fsynced, so
// that a crash leaves the old file or the new one, and the key is never
// readable by others even for a moment.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone once renamed
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Trust is what a member needs for mutual TLS: the rack CA and its own
// certificate, which names it.
type Trust struct {
	Roots *x509.CertPool
	Own   tls.Certificate
	// Identity is who Own names.
	Identity Identity
}

// The files of a member's directory (WriteMember, LoadDir), and of the
// CA's (WriteCA, LoadCADir).
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	caKey    = "ca.key"
)

// ZoneDir is where a zone's identity lives in its sled's directory: the
// sled-agent hands it to the zone it runs (a nexus replica's tls_dir).
func ZoneDir(sledDir, zoneID string) string { return filepath.Join(sledDir, "zones", zoneID) }

// WriteMember issues id a certificate and writes what it needs for mutual
// TLS into dir: the CA's certificate, its own, and its key (0600).
func WriteMember(dir string, ca *CA, id Identity, now time.Time, hosts ...string) error {
	certPEM, keyPEM, err := ca.Issue(id, now, hosts...)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CAFile), ca.CertPEM(), 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CertFile), certPEM, 0o644)
}

// LoadDir reads a member's directory (WriteMember).
func LoadDir(dir string) (Trust, error) {
	return LoadTrust(filepath.Join(dir, CAFile), filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
}

// WriteCA writes the CA's certificate and key (0600) into dir.
func (ca *CA) WriteCA(dir string) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	return WriteKeyPair(dir, "ca", ca.CertPEM(), keyPEM)
}

// LoadCADir reads the CA that WriteCA wrote into dir.
func LoadCADir(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKey))
	if err != nil {
		return nil, err
	}
	return LoadCA(certPEM, keyPEM)
}

// LoadTrust reads the CA certificate and a member's key pair from files.
func LoadTrust(caFile, certFile, keyFile string) (Trust, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return Trust{}, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return Trust{}, fmt.Errorf("%s holds no certificate", caFile)
	}
	own, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return Trust{}, err
	}
	id, err := IdentityOf(own.Leaf)
	if err != nil {
		return Trust{}, fmt.Errorf("%s: %w", certFile, err)
	}
	if _, err := own.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Trust{}, fmt.Errorf("%s is not a certificate of the CA in %s: %w", certFile, caFile, err)
	}
	return Trust{Roots: roots, Own: own, Identity: id}, nil
}

// ServerConfig is a server's TLS: every client must present a certificate
// of the rack CA (S2); who it is, the handlers read with PeerIdentity.
func (t Trust) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Own},
		ClientCAs:    t.Roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// ClientConfig is a client's TLS: the server must present a certificate
// of the rack CA naming want, whatever address it was reached at. A want
// without an ID is any member of its kind (any nexus replica); nil is any
// member of the rack.
func (t Trust) ClientConfig(want *Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Own},
		// The chain and the identity are verified below, by the rack CA and
		// the URI SAN; host names play no part.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.Roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("the server's certificate is not the rack's: %w", err)
			}
			got, err := IdentityOf(leaf)
			if err != nil {
				return err
			}
			if want != nil && (got.Kind != want.Kind || want.ID != "" && got.ID != want.ID) {
				return fmt.Errorf("the server is %s, not %s", got, *want)
			}
			return nil
		},
	}
}

// PeerIdentity is who the client of a server connection is, from the
// chain the server verified (ServerConfig); an unverified certificate
// names nobody.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return IdentityOf(cs.VerifiedChains[0][0])
	}
	return Identity{}, ErrNoIdentity
}
