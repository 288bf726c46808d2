package nexus_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/racktest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// countingReader is a body of size bytes that counts what was read of it.
type countingReader struct {
	size, read int64
	served     atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read >= c.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), c.size-c.read)
	for i := range n {
		p[i] = ' '
	}
	c.read += n
	c.served.Add(n)
	return int(n), nil
}

func post(t *testing.T, url, token string, body io.Reader, contentLength int64) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error() // the server closed the connection on a body it refused
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(text)
}

// SPEC 7: a body is read only once its caller is authenticated, and never
// past the limit. Four 64 MiB bodies without a token are refused 401 before
// they are read; one with a token is refused 413 once the limit is passed.
// The process's allocations stay bounded all along.
func TestSPEC7_AnUnauthenticatedOrOversizedBodyIsRefusedBeforeItIsRead(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	url := r.Nexus(0).ExternalURL() + "/v1/projects"
	token := r.Token(racktest.FleetAdmin)
	const huge = 64 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 4 {
		for _, length := range []int64{huge, -1} { // declared, and chunked
			body := &countingReader{size: huge}
			status, text := post(t, url, "", body, length)
			if status != http.StatusUnauthorized && status != 0 {
				t.Fatalf("unauthenticated 64 MiB body %d (length %d): %d %s; want 401", i, length, status, text)
			}
			if got := body.served.Load(); got > 8<<20 {
				t.Fatalf("the client sent %d bytes of an unauthenticated body before the answer", got)
			}
		}
	}
	for _, length := range []int64{huge, -1} {
		body := &countingReader{size: huge}
		status, text := post(t, url, token, body, length)
		if status != http.StatusRequestEntityTooLarge && status != 0 {
			t.Fatalf("a 64 MiB body with a token (length %d): %d %s; want 413", length, status, text)
		}
		if status != 0 && !strings.Contains(text, "1048576") {
			t.Fatalf("the 413 does not say the limit: %s", text)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 96<<20 {
		t.Fatalf("ten 64 MiB bodies allocated %d MiB; want it bounded well below one body per request", grew>>20)
	} else {
		t.Logf("ten refused 64 MiB bodies allocated %.1f MiB in all (client and server)", float64(grew)/(1<<20))
	}
	// A body within the limit still works.
	if status, text := post(t, url, token, strings.NewReader(`{"name": "p", "description": ""}`), -1); status != http.StatusCreated {
		t.Fatalf("a small body: %d %s", status, text)
	}
}

// SPEC 7: a body trickled in slower than request_body_timeout allows is
// answered 408 and closed, not read for ever.
func TestSPEC7_ABodyThatDoesNotArriveInTimeIs408(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{NexusConfig: func(_ int, c *config.Config) {
		c.RequestBodyTimeout = duration.Duration(500 * time.Millisecond)
	}})
	resp := withholdBody(t, r.Nexus(0).ExternalURL(), "Authorization: Bearer "+r.Token(racktest.FleetAdmin)+"\r\n",
		"Content-Length: 1024\r\n")
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("a body that never comes: %d (close %v); want 408 closing the connection", resp.StatusCode, resp.Close)
	}
}

// withholdBody sends a POST's headers and the first byte of its body over a
// raw connection, never the rest, and returns the answer that comes
// meanwhile; no answer within 20 s fails the test.
func withholdBody(t *testing.T, url, headers, length string) *http.Response {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "POST /v1/projects HTTP/1.1\r\nHost: %s\r\n%s%s\r\n{", host, headers, length); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second)) //nolint:errcheck // only bounds a failure
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is withheld: %v", err)
	}
	resp.Body.Close()
	return resp
}

// SPEC 7: a request with two Authorization headers is refused, whatever
// they say, and changes nothing.
func TestSPEC7_TwoAuthorizationHeadersAreRefused(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	for _, body := range []string{"", `{"name": "p", "description": ""}`} {
		method := http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, r.Nexus(0).ExternalURL()+"/v1/projects", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Add("Authorization", "Bearer "+r.Token(racktest.FleetAdmin))
		req.Header.Add("Authorization", "Bearer "+r.Token(racktest.FleetAdmin))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(text), "Authorization") {
			t.Fatalf("%s with two Authorization headers: %d %s; want 400 naming the header", method, resp.StatusCode, text)
		}
	}
	var projects struct{ Items []any }
	if err := r.Client(racktest.FleetAdmin).MustCall(t, http.MethodGet, "/v1/projects", "", http.StatusOK).JSON(&projects); err != nil {
		t.Fatal(err)
	}
	if len(projects.Items) != 0 {
		t.Fatalf("a refused request created %s", fmt.Sprint(projects.Items))
	}
}

// SPEC 7: a NUL character, which PostgreSQL cannot store, is 400 naming
// the field on both backends (it was 500 on PostgreSQL and stored on
// SQLite), and nothing is created.
func TestSPEC7_ANULCharacterIs400NamingTheFieldOnBothBackends(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend})
			c := r.Client(racktest.FleetAdmin)
			for field, body := range map[string]string{
				"description": `{"name": "p", "description": "a\u0000b"}`,
				"name":        `{"name": "p\u0000", "description": ""}`,
			} {
				resp := c.Call(t, http.MethodPost, "/v1/projects", body)
				if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), field+": must not contain a NUL") {
					t.Errorf("%s: %d %s; want 400 naming %s", body, resp.Status, resp.Body, field)
				}
			}
			if resp := c.Call(t, http.MethodGet, "/v1/projects/p", ""); resp.Status != http.StatusNotFound {
				t.Fatalf("a refused project was created: %d %s", resp.Status, resp.Body)
			}
		})
	}
}

// SPEC 7: where the API says integer, only a JSON integer is taken: not a
// string, a fraction or an exponent (protojson took "1073741824" and 1.0).
func TestSPEC7_IntegersMustBeJSONIntegers(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1})
	c := r.Client(racktest.FleetAdmin)
	c.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
	for _, bad := range []struct{ field, memory, ncpus string }{
		{"memory", `"1073741824"`, "1"}, {"memory", "1073741824.0", "1"}, {"memory", "1.073741824e9", "1"},
		{"ncpus", "1073741824", "1.0"}, {"ncpus", "1073741824", `"1"`},
	} {
		body := fmt.Sprintf(`{"name": "vm", "hostname": "vm", "description": "", "memory": %s, "ncpus": %s, "start": false}`, bad.memory, bad.ncpus)
		resp := c.Call(t, http.MethodPost, "/v1/instances?project=p", body)
		if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), bad.field+": must be a JSON integer") {
			t.Errorf("%s: %d %s; want 400 naming %s", body, resp.Status, resp.Body, bad.field)
		}
	}
	c.MustCall(t, http.MethodPost, "/v1/instances?project=p",
		`{"name": "vm", "hostname": "vm", "description": "", "memory": 1073741824, "ncpus": 1, "start": false}`, http.StatusCreated)
}

// SPEC 7: a page token resumes only the listing and sort order that
// issued it: not another listing, not another project's instances, not
// another sort order.
func TestSPEC7_APageTokenWorksOnlyForTheListingAndSortThatIssuedIt(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1})
	c := r.Client(racktest.FleetAdmin)
	for _, p := range []string{"p", "q", "r"} {
		c.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "`+p+`", "description": ""}`, http.StatusCreated)
	}
	for _, vm := range []string{"a", "b"} {
		c.MustCall(t, http.MethodPost, "/v1/instances?project=p",
			`{"name": "`+vm+`", "hostname": "vm", "description": "", "memory": 1073741824, "ncpus": 1, "start": false}`, http.StatusCreated)
	}
	token := func(path string) string {
		var page struct {
			NextPage string `json:"next_page"`
		}
		if err := c.MustCall(t, http.MethodGet, path, "", http.StatusOK).JSON(&page); err != nil || page.NextPage == "" {
			t.Fatalf("GET %s gave no next page (%v)", path, err)
		}
		return page.NextPage
	}
	projects, instances := token("/v1/projects?limit=1"), token("/v1/instances?project=p&limit=1")
	for _, c2 := range []struct{ path, field string }{
		{"/v1/instances?project=p&page_token=" + projects, "page_token"},
		{"/v1/system/hardware/sleds?page_token=" + projects, "page_token"},
		{"/v1/instances?project=q&page_token=" + instances, "page_token"},
		{"/v1/projects?page_token=" + instances, "page_token"},
		{"/v1/projects?sort_by=id_ascending&page_token=" + projects, "sort_by"},
	} {
		resp := c.Call(t, http.MethodGet, c2.path, "")
		if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), c2.field) {
			t.Errorf("GET %s: %d %s; want 400 naming %s", c2.path, resp.Status, resp.Body, c2.field)
		}
	}
	c.MustCall(t, http.MethodGet, "/v1/projects?page_token="+projects, "", http.StatusOK)
	c.MustCall(t, http.MethodGet, "/v1/instances?project=p&page_token="+instances, "", http.StatusOK)
}

// SPEC 7: on the external gRPC listener too, two authorization values are
// refused, whatever they say.
func TestSPEC7_TwoAuthorizationValuesAreRefusedOverGRPC(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	conn, err := grpc.NewClient(r.Server().ExternalGRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	token := "Bearer " + r.Token(racktest.FleetAdmin)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", token, "authorization", token)
	_, err = nexusv1.NewNexusExternalClient(conn).ProjectList(ctx, &nexusv1.ProjectListRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("two authorization values: %v; want INVALID_ARGUMENT", err)
	}
	ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", token)
	if _, err := nexusv1.NewNexusExternalClient(conn).ProjectList(ctx, &nexusv1.ProjectListRequest{}); err != nil {
		t.Fatalf("one authorization value: %v", err)
	}
}

// SPEC 7: a refused request whose body has not all come is answered at
// once and its connection closed: the server does not wait for, or read,
// the rest of the body (a client withholding it held the connection, and
// its goroutine, for as long as it liked).
func TestSPEC7_ARefusalDoesNotWaitForTheRestOfTheBody(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	for name, headers := range map[string]string{
		"no token":          "",
		"two tokens":        "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n",
		"over the limit":    "Authorization: Bearer " + r.Token(racktest.FleetAdmin) + "\r\n",
		"chunked, no token": "Transfer-Encoding: chunked\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			length := "Content-Length: 40\r\n"
			if name == "over the limit" {
				length = "Content-Length: 2097152\r\n"
			}
			if strings.Contains(headers, "chunked") {
				length = ""
			}
			resp := withholdBody(t, r.Nexus(0).ExternalURL(), headers, length)
			if resp.StatusCode < 400 || resp.StatusCode >= 500 || !resp.Close {
				t.Fatalf("answered %d (close %v); want a refusal that closes the connection", resp.StatusCode, resp.Close)
			}
		})
	}
}

// SPEC 7: over external gRPC too (no REST decoder in the way), a NUL in a
// description, or in a forged page token, is 400 on both backends.
func TestSPEC7_ANULOverGRPCOrInAPageTokenIsRefusedOnBothBackends(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend})
			conn, err := grpc.NewClient(r.Server().ExternalGRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+r.Token(racktest.FleetAdmin))
			_, err = nexusv1.NewNexusExternalClient(conn).ProjectCreate(ctx, &nexusv1.ProjectCreateRequest{
				Project: &nexusv1.ProjectCreateParams{Name: "p", Description: "a\x00b"}})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "description") {
				t.Fatalf("a NUL in a description over gRPC: %v; want INVALID_ARGUMENT naming description", err)
			}
			token := base64.RawURLEncoding.EncodeToString([]byte(`{"l":"projects","s":"name_ascending","a":"a\u0000"}`))
			if resp := r.Client(racktest.FleetAdmin).Call(t, http.MethodGet, "/v1/projects?page_token="+token, ""); resp.Status != http.StatusBadRequest {
				t.Fatalf("a page token holding a NUL: %d %s; want 400", resp.Status, resp.Body)
			}
		})
	}
}

// S5: with a certificate and key configured, the external API is HTTPS
// (REST and external gRPC alike): a client that trusts the certificate
// gets the API, one speaking plain HTTP gets nothing of it.
func TestS5_TheExternalAPIServesHTTPSFromItsConfiguredCertificate(t *testing.T) {
	// Any certificate a client trusts will do; the test's rack CA issues
	// one for the API's address.
	ca := rackpkitest.New(t)
	certPEM, keyPEM, err := ca.CA().Issue(rackpki.Identity{Kind: rackpki.Operator, ID: "api"}, time.Now(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := rackpki.WriteKeyPair(dir, "api", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	r := racktest.StartInProcess(t, racktest.Options{NexusConfig: func(_ int, c *config.Config) {
		c.ExternalTLSCertFile, c.ExternalTLSKeyFile = filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	}})
	url := r.Server().ExternalURL()
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("the external URL is %s, want https://", url)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.CA().Cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	token := r.Token(racktest.FleetAdmin)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/projects over HTTPS: %d, want 200", resp.StatusCode)
	}
	plain, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+strings.TrimPrefix(url, "https://")+"/v1/projects", nil)
	plain.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP to the HTTPS listener answered 200")
		}
	}
	// External gRPC is TLS with the same certificate.
	conn, err := grpc.NewClient(r.Server().ExternalGRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if _, err := nexusv1.NewNexusExternalClient(conn).ProjectList(callCtx, &nexusv1.ProjectListRequest{}); err != nil {
		t.Fatalf("external gRPC over TLS: %v", err)
	}
}

// SPEC 7, N1: on SQLite, hundreds of create+start calls at once all
// succeed: writers wait their turn, and "database is locked" (SQLITE_BUSY)
// never reaches a caller as a 500. Before, 1,153 of 1,300 such calls
// answered 500.
func TestSPEC7_ManyParallelWritersOnSQLiteNeverSeeDatabaseIsLocked(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 5})
	c := r.Client(racktest.FleetAdmin)
	c.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"p","description":""}`, http.StatusCreated)
	const calls = 300 // within the 5 sleds' 320 CPUs
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(ctx, http.MethodPost, "/v1/instances?project=p",
				fmt.Sprintf(`{"name":"vm-%d","description":"","hostname":"h","ncpus":1,"memory":1073741824,"start":true}`, i))
			if err == nil && resp.Status == http.StatusCreated {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, fmt.Sprintf("%d %s %v", resp.Status, resp.Body, err))
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d parallel create+start calls failed; first: %s", len(failures), calls, failures[0])
	}
}
