package racksetup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// Certificates is where IssueCertificates writes a rack's identities
// (S1): the CA, each sled's directory (its sled-agent's tls_dir, with its
// nexus zones' identities under zones/<zone id>), and the operator's.
type Certificates struct{ Dir string }

// CADir holds the rack CA's certificate and key: the key issues every
// identity, so it belongs offline once the rack is set up.
func (c Certificates) CADir() string { return filepath.Join(c.Dir, "ca") }

// SledDir is sled's tls_dir.
func (c Certificates) SledDir(sled string) string { return filepath.Join(c.Dir, "sleds", sled) }

// OperatorDir is the operator's tls_dir (sledctl, rack setup).
func (c Certificates) OperatorDir() string { return filepath.Join(c.Dir, "operator") }

// Issue makes the rack CA, unless it exists, and issues from it every
// identity the plan needs that is not there yet: each sled's, each nexus
// zone's (into its sled's directory, for the sled-agent to hand to the
// zone) and the operator's. Running it again on the same directory
// changes nothing but what a grown plan adds. It returns the identities it
// issued.
func (c Certificates) Issue(p Plan, now time.Time) ([]rackpki.Identity, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	type member struct {
		dir string
		id  rackpki.Identity
	}
	members := []member{{c.OperatorDir(), rackpki.Identity{Kind: rackpki.Operator, ID: "operator"}}}
	for _, s := range p.Sleds {
		members = append(members, member{c.SledDir(s.ID), rackpki.Identity{Kind: rackpki.Sled, ID: s.ID}})
		for _, z := range s.Zones {
			if z.Kind == model.ZoneNexus {
				members = append(members, member{rackpki.ZoneDir(c.SledDir(s.ID), z.ID), rackpki.Identity{Kind: rackpki.Nexus, ID: z.ID}})
			}
		}
	}
	// A new CA only for a new rack: its certificate there without its key
	// is a CA whose key was taken offline, and a new one would split the
	// rack between the members trusting each.
	caPEM, err := os.ReadFile(filepath.Join(c.CADir(), rackpki.CAFile))
	if errors.Is(err, fs.ErrNotExist) {
		ca, err := rackpki.NewCA(p.Rack, now)
		if err == nil {
			err = ca.WriteCA(c.CADir())
		}
		if err != nil {
			return nil, fmt.Errorf("the rack CA in %s: %w", c.CADir(), err)
		}
		caPEM = ca.CertPEM()
	} else if err != nil {
		return nil, err
	}
	var missing []member
	for _, m := range members {
		if !issuedBy(caPEM, m.dir, m.id) {
			missing = append(missing, m)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	ca, err := rackpki.LoadCADir(c.CADir())
	if err != nil {
		return nil, fmt.Errorf("%d identities need issuing (%s first) but the rack CA in %s cannot issue: %w",
			len(missing), missing[0].id, c.CADir(), err)
	}
	var issued []rackpki.Identity
	for _, m := range missing {
		if err := rackpki.WriteMember(m.dir, ca, m.id, now); err != nil {
			return issued, fmt.Errorf("issuing %s: %w", m.id, err)
		}
		issued = append(issued, m.id)
	}
	return issued, nil
}

// issuedBy tells whether dir holds id's identity from the CA whose
// certificate is caPEM: LoadDir checks the certificate against the
// directory's CA, which must be that one.
func issuedBy(caPEM []byte, dir string, id rackpki.Identity) bool {
	have, err := rackpki.LoadDir(dir)
	if err != nil || have.Identity != id {
		return false
	}
	trusted, err := os.ReadFile(filepath.Join(dir, rackpki.CAFile))
	return err == nil && bytes.Equal(trusted, caPEM)
}
