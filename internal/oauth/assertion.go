package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as the SHA-1 thumbprint (RFC 7515 §4.1.7); not used for security.
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// clientAssertionType is RFC 7523 §2.2's client authentication type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime bounds how long a stolen assertion is usable; Entra
// accepts up to ten minutes of clock skew so shorter is not more robust.
const assertionLifetime = 10 * time.Minute

// certCredential signs RFC 7523 client assertions for certificate-based
// client authentication (Entra ID "certificate credentials").
type certCredential struct {
	key *rsa.PrivateKey
	x5t string // base64url SHA-1 thumbprint of the DER certificate
}

// loadCertCredential reads the certificate and its RSA private key (PEM;
// PKCS#1 or PKCS#8; both may be in one file). Errors name the field and the
// problem, never file contents. The returned PEM text is for redaction.
func loadCertCredential(certFile, keyFile string) (*certCredential, string, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, "", fmt.Errorf("certificate_file: cannot read file: %w", pathless(err))
	}
	var cert *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if cert, err = x509.ParseCertificate(b.Bytes); err != nil {
				return nil, "", errors.New("certificate_file: invalid certificate")
			}
			break
		}
	}
	if cert == nil {
		return nil, "", errors.New("certificate_file: no PEM CERTIFICATE block")
	}

	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("private_key_file: cannot read file: %w", pathless(err))
	}
	key, err := parseRSAKey(keyPEM)
	if err != nil {
		return nil, string(keyPEM), fmt.Errorf("private_key_file: %w", err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, string(keyPEM), errors.New("private_key_file: key does not match certificate_file")
	}
	sum := sha1.Sum(cert.Raw) //nolint:gosec // thumbprint, see import
	return &certCredential{key: key, x5t: base64.RawURLEncoding.EncodeToString(sum[:])}, string(keyPEM), nil
}

// parseRSAKey finds the first private key block. Messages never include key
// bytes.
func parseRSAKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			if _, enc := b.Headers["Proc-Type"]; enc {
				return nil, errors.New("encrypted private keys are not supported")
			}
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, errors.New("invalid PKCS#1 private key")
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, errors.New("invalid PKCS#8 private key")
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, errors.New("private key is not RSA (RS256 needs RSA)")
			}
			return rk, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		}
	}
}

// pathless drops the path from a file error: paths are not secret, but
// the field name already says which file, and the os error text suffices.
func pathless(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// assertion builds a signed client assertion JWT: header alg RS256 with x5t,
// claims aud (token endpoint), iss = sub = client ID, jti, nbf/iat/exp.
func (c *certCredential) assertion(clientID, audience string, now time.Time) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "x5t": c.x5t})
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"aud": audience,
		"iss": clientID,
		"sub": clientID,
		"jti": hex.EncodeToString(jti[:]),
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(),
	})
	if err != nil {
		return "", err
	}
	signingInput := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", errors.New("signing client assertion failed")
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
