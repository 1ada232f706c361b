package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // matches the x5t definition under test
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/oauthtest"
)

const (
	testClientID     = "11111111-2222-3333-4444-555555555555"
	testClientSecret = "s3cr3t~ClientSecretValue.abc"
	testRefreshToken = "1//0gRefreshTokenValue-xyz"
	testSubject      = "probe@example.com"
	testSAEmail      = "probe-sa@project.iam.gserviceaccount.com"
)

var (
	keysOnce sync.Once
	keys     [2]*rsa.PrivateKey
)

// testKey returns one of two RSA keys generated once per test binary:
// key generation is slow under -race.
func testKey(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		for j := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[j] = k
		}
	})
	return keys[i]
}

func keyPEM(t *testing.T, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// writeCert writes a self-signed certificate for certKey and the PEM of
// fileKey (normally the same key) to a temp dir.
func writeCert(t *testing.T, certKey, fileKey *rsa.PrivateKey) (certFile, keyFile string, certDER []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "emailqos test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &certKey.PublicKey, certKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, keyPEM(t, fileKey))
	return certFile, keyFile, der
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeSAKey writes a Google service-account JSON key whose token_uri is
// tokenURL.
func writeSAKey(t *testing.T, k *rsa.PrivateKey, typ, tokenURL string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"type":           typ,
		"project_id":     "project",
		"private_key_id": "kid-1",
		"private_key":    keyPEM(t, k),
		"client_email":   testSAEmail,
		"client_id":      "1234567890",
		"token_uri":      tokenURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sa.json")
	writeFile(t, path, string(b))
	return path
}

// newTokenEndpoint is a token endpoint that records requests and answers
// with a fresh token valid for an hour, or what the test sets.
func newTokenEndpoint(t *testing.T) *oauthtest.Endpoint { return oauthtest.New(t) }

// verifyJWT checks an RS256 signature with pub and returns header and claims.
func verifyJWT(t *testing.T, tok string, pub *rsa.PublicKey) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts", len(parts))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("signature encoding: %v", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("RS256 signature does not verify: %v", err)
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT part %d encoding: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("JWT part %d JSON: %v", i, err)
		}
	}
	return header, claims
}

func thumbprint(der []byte) string {
	sum := sha1.Sum(der) //nolint:gosec // x5t
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// fakeClock drives Source's notion of time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func microsoftSecretConfig(e *oauthtest.Endpoint) Config {
	return Config{
		Provider: ProviderMicrosoft, TenantID: "contoso.onmicrosoft.com",
		ClientID: testClientID, ClientSecret: testClientSecret,
		AuthorityHost: e.URL,
	}
}

func mustSource(t *testing.T, c Config) *Source {
	t.Helper()
	s, err := NewSource(t.Context(), c, nil)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	return s
}
