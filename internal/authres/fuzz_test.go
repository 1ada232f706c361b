package authres

import (
	"testing"
)

// FuzzParse parses arbitrary field values, alone and as a header block: no
// panic, bounded output, results well formed.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"mx.google.com; dkim=pass header.i=@example.com header.s=google header.b=Ab12Cd34; spf=pass (google.com: domain of a@example.com designates 192.0.2.1 as permitted sender) smtp.mailfrom=a@example.com; dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com",
		"spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com; dkim=pass (signature was verified) header.d=example.com;dmarc=pass action=none header.from=example.com;compauth=pass reason=100",
		"mx.b.test; dkim=pass (2048-bit key; unprotected) header.d=a.test header.i=@a.test header.a=rsa-sha256 header.s=mail header.b=AbCdEf12;",
		`"quoted id" 1; arc=pass (i=1 (nested \) x) spf=pass) reason="a \" b"; none`,
		"x; ((((; =;=; a/b/c=d e.f=\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		field, _ := ParseField(value)
		if len(field.Results) > maxResults {
			t.Fatalf("%d results", len(field.Results))
		}
		for _, r := range field.Results {
			if r.Method == "" || r.Value == "" {
				t.Fatalf("empty method or value: %+v", r)
			}
			if len(r.Props) > maxResults {
				t.Fatalf("%d properties", len(r.Props))
			}
		}
		rep, _ := Evaluate([]byte("Authentication-Results: "+value+"\r\nFrom: a@example.com\r\n\r\n"), nil)
		if rep.DKIM.Aligned && rep.DKIM.Value != Pass {
			t.Fatalf("aligned %q", rep.DKIM.Value)
		}
	})
}
