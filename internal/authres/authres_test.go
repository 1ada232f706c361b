package authres

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The provider samples are shared with the received package.
func readSample(t testing.TB, path ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(path...))
	require.NoError(t, err)
	return b
}

func res(method, value string, props ...string) Result {
	r := Result{Method: method, Value: value}
	for i := 0; i+1 < len(props); i += 2 {
		if r.Props == nil {
			r.Props = map[string]string{}
		}
		r.Props[props[i]] = props[i+1]
	}
	return r
}

// verdicts is what the sample tests compare of a report.
type verdicts struct {
	SPF, DKIM, DMARC, ARC string
	SPFAligned, Aligned   bool
	DKIMSignatures        int
	From                  string
	Ignored               int
	Other                 []string
}

func summarize(r Report) verdicts {
	v := verdicts{SPF: r.SPF.Value, DKIM: r.DKIM.Value, DMARC: r.DMARC.Value, ARC: r.ARC.Value,
		SPFAligned: r.SPF.Aligned, Aligned: r.DKIM.Aligned, DKIMSignatures: len(r.DKIM.Results),
		From: r.FromDomain, Ignored: r.Ignored}
	for _, o := range r.Other {
		v.Other = append(v.Other, o.Method+"="+o.Value)
	}
	return v
}

func TestSamples(t *testing.T) {
	samples := filepath.Join("..", "received", "testdata")
	tests := []struct {
		file    string
		trusted []string
		want    verdicts
	}{{
		file: "gmail-to-gmail.eml", trusted: []string{"mx.google.com"},
		want: verdicts{SPF: Pass, DKIM: Pass, DMARC: Pass, SPFAligned: true, Aligned: true, DKIMSignatures: 2, From: "example.com"},
	}, {
		file: "gmail-to-m365.eml", trusted: []string{""},
		want: verdicts{SPF: Pass, DKIM: Pass, DMARC: Pass, SPFAligned: true, Aligned: true, DKIMSignatures: 1, From: "example.com",
			Other: []string{"compauth=pass"}},
	}, {
		file: "m365-to-gmail.eml", trusted: []string{"MX.Google.com."},
		want: verdicts{SPF: Pass, DKIM: Pass, DMARC: Pass, ARC: Pass, SPFAligned: true, Aligned: true, DKIMSignatures: 1, From: "example.net"},
	}, {
		file: "postfix-dovecot.eml", trusted: []string{"mx.b.test"},
		want: verdicts{SPF: Pass, DKIM: Pass, DMARC: Pass, SPFAligned: true, Aligned: true, DKIMSignatures: 1, From: "a.test",
			Other: []string{"dkim-atps=neutral"}},
	}, {
		// The receiver's real field says fail; a copy of its authserv-id
		// further down (written by the sender) and another server's field
		// say pass, and are not believed.
		file: "hostile.eml", trusted: []string{"mx.google.com"},
		want: verdicts{SPF: SoftFail, DKIM: Fail, DMARC: Fail, DKIMSignatures: 1, From: "example.com", Ignored: 1},
	}}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw := readSample(t, samples, tc.file)
			rep, err := Evaluate(raw, tc.trusted)
			require.NoError(t, err)
			assert.Equal(t, tc.want, summarize(rep))

			// Without a list, the topmost field's authserv-id is believed:
			// the same verdicts for these messages.
			rep2, err := Evaluate(bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n")), nil)
			require.NoError(t, err)
			assert.Equal(t, tc.want, summarize(rep2))
		})
	}
}

func TestSampleDetails(t *testing.T) {
	rep, err := Evaluate(readSample(t, "..", "received", "testdata", "gmail-to-gmail.eml"), []string{"mx.google.com"})
	require.NoError(t, err)
	require.Len(t, rep.Fields, 1)
	assert.Equal(t, "mx.google.com", rep.Fields[0].AuthServID)
	assert.Equal(t, []Result{
		res("dkim", Pass, "header.i", "@esp.example", "header.s", "s1", "header.b", "Zz99Yy88"),
		res("dkim", Pass, "header.i", "@example.com", "header.s", "google", "header.b", "Ab12Cd34"),
	}, rep.DKIM.Results)
	assert.Equal(t, "probe@example.com", rep.SPF.Results[0].Prop("smtp.mailfrom"))
	assert.Equal(t, "example.com", rep.DMARC.Results[0].Prop("Header.From"))

	rep, err = Evaluate(readSample(t, "..", "received", "testdata", "gmail-to-m365.eml"), nil)
	require.NoError(t, err)
	assert.Equal(t, []Result{res("dmarc", Pass, "action", "none", "header.from", "example.com")}, rep.DMARC.Results)
	assert.Equal(t, []Result{{Method: "compauth", Value: Pass, Reason: "100"}}, rep.Other)
}

func TestForgedWhenReceiverAddsNone(t *testing.T) {
	raw := readSample(t, "testdata", "no-receiver-results.eml")
	// Without a list the topmost field is believed, even when the
	// receiver wrote none: why the receiving side's id should be named.
	rep, err := Evaluate(raw, nil)
	require.NoError(t, err)
	assert.Equal(t, Pass, rep.DKIM.Value)

	rep, err = Evaluate(raw, []string{"mail.b.test", "mx.b.test.example"})
	require.NoError(t, err)
	assert.Equal(t, verdicts{From: "a.test", Ignored: 1}, summarize(rep))
	assert.Empty(t, rep.Fields)
}

func TestEvaluateEdges(t *testing.T) {
	t.Run("no fields", func(t *testing.T) {
		rep, err := Evaluate([]byte("From: a@example.com\r\n\r\n"), nil)
		require.NoError(t, err)
		assert.Equal(t, Report{FromDomain: "example.com"}, rep)
	})
	t.Run("broken header keeps the fields above", func(t *testing.T) {
		rep, err := Evaluate([]byte("Authentication-Results: mx.example; dkim=pass header.d=example.com\r\nbroken line\r\n"), nil)
		assert.Error(t, err)
		assert.Equal(t, Pass, rep.DKIM.Value)
		assert.False(t, rep.DKIM.Aligned) // no From domain known
	})
	t.Run("malformed trusted field: results read are kept", func(t *testing.T) {
		rep, err := Evaluate([]byte("Authentication-Results: mx.example; spf=pass smtp.mailfrom=example.com; dkim; dmarc=fail header.from=example.com\r\n\r\n"), nil)
		assert.Error(t, err)
		assert.Equal(t, Pass, rep.SPF.Value)
		assert.True(t, rep.SPF.Aligned)
		assert.Equal(t, Fail, rep.DMARC.Value)
	})
	t.Run("one field per method wins: the topmost", func(t *testing.T) {
		rep, err := Evaluate([]byte(
			"Authentication-Results: mx.example; dkim=fail header.d=example.com\r\n"+
				"Authentication-Results: mx.example; dkim=pass header.d=example.com; spf=pass smtp.mailfrom=x@example.com\r\n"+
				"From: <a@example.com>\r\n\r\n"), nil)
		require.NoError(t, err)
		assert.Equal(t, Fail, rep.DKIM.Value)
		assert.Len(t, rep.DKIM.Results, 1)
		assert.Equal(t, Pass, rep.SPF.Value) // reported only in the lower field
		assert.Len(t, rep.Fields, 2)
	})
	t.Run("alignment by organizational domain", func(t *testing.T) {
		rep, err := Evaluate([]byte(
			"Authentication-Results: mx.example; dkim=pass header.d=mail.example.co.uk; spf=pass smtp.mailfrom=bounce@other.co.uk\r\n"+
				"From: Probe <probe@news.example.co.uk>\r\n\r\n"), nil)
		require.NoError(t, err)
		assert.True(t, rep.DKIM.Aligned)
		assert.False(t, rep.SPF.Aligned)
	})
}

func TestDKIMAggregate(t *testing.T) {
	d := func(value, domain string) Result { return res("dkim", value, "header.d", domain) }
	tests := []struct {
		name    string
		sigs    []Result
		value   string
		aligned bool
	}{
		{"none", nil, "", false},
		{"aligned pass", []Result{d(Fail, "example.com"), d(Pass, "esp.example"), d(Pass, "example.com")}, Pass, true},
		{"aligned by header.i", []Result{res("dkim", Pass, "header.i", "@sub.example.com")}, Pass, true},
		{"unaligned pass", []Result{d(Fail, "example.com"), d(Pass, "esp.example")}, Pass, false},
		{"worst failure", []Result{d(TempError, "example.com"), d(Fail, "example.com"), d(None, "")}, Fail, false},
		{"unknown value last", []Result{d("whatever", "example.com"), d(Neutral, "example.com")}, Neutral, false},
		{"none only", []Result{d(None, "")}, None, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := dkimVerdict(tc.sigs, "example.com")
			assert.Equal(t, tc.value, v.Value)
			assert.Equal(t, tc.aligned, v.Aligned)
		})
	}
}

func TestParseField(t *testing.T) {
	tests := []struct {
		name, in string
		want     Field
		err      bool
	}{{
		name: "RFC 8601 example with version and comments",
		in:   "example.com 1; (comment) spf=pass (looks good; really) smtp.mailfrom=example.net (x=y)",
		want: Field{AuthServID: "example.com", Results: []Result{res("spf", Pass, "smtp.mailfrom", "example.net")}},
	}, {
		name: "no result",
		in:   "example.org 1; none",
		want: Field{AuthServID: "example.org"},
	}, {
		name: "bare authserv-id",
		in:   "  mx.example.org  ",
		want: Field{AuthServID: "mx.example.org"},
	}, {
		name: "quoted authserv-id and values, reason",
		in:   `"mx.example.org"; dkim/1 = PASS reason="good signature; ok" header.d = "example.com" header.b=AbC+/d==`,
		want: Field{AuthServID: "mx.example.org", Results: []Result{{Method: "dkim", Value: Pass, Reason: "good signature; ok",
			Props: map[string]string{"header.d": "example.com", "header.b": "AbC+/d=="}}}},
	}, {
		name: "no authserv-id, no space after semicolons",
		in:   "spf=none smtp.mailfrom=example.com;dkim=none (message not signed) header.d=none;dmarc=none action=none header.from=example.com;",
		want: Field{Results: []Result{res("spf", None, "smtp.mailfrom", "example.com"), res("dkim", None, "header.d", "none"),
			res("dmarc", None, "action", "none", "header.from", "example.com")}},
	}, {
		name: "nested comment and quoted pair",
		in:   `mx.example; arc=pass (i=1 (nested \) still) spf=pass) smtp.remote-ip=192.0.2.1`,
		want: Field{AuthServID: "mx.example", Results: []Result{res("arc", Pass, "smtp.remote-ip", "192.0.2.1")}},
	}, {
		name: "duplicate property keeps the first",
		in:   "mx.example; dkim=pass header.d=a.example header.d=b.example",
		want: Field{AuthServID: "mx.example", Results: []Result{res("dkim", Pass, "header.d", "a.example")}},
	}, {
		name: "unsupported version",
		in:   "mx.example 2; spf=pass",
		want: Field{AuthServID: "mx.example"},
		err:  true,
	}, {
		name: "method without result is skipped",
		in:   "mx.example; dkim; spf=pass",
		want: Field{AuthServID: "mx.example", Results: []Result{res("spf", Pass)}},
		err:  true,
	}, {
		name: "stray word is reported, result kept",
		in:   "mx.example; spf=pass stray smtp.mailfrom=example.com",
		want: Field{AuthServID: "mx.example", Results: []Result{res("spf", Pass, "smtp.mailfrom", "example.com")}},
		err:  true,
	}, {
		name: "unterminated quoted string",
		in:   `mx.example; spf=pass reason="open`,
		want: Field{AuthServID: "mx.example", Results: []Result{res("spf", Pass)}},
		err:  true,
	}, {
		name: "unterminated comment runs to the end",
		in:   "mx.example; spf=pass (open smtp.mailfrom=example.com",
		want: Field{AuthServID: "mx.example", Results: []Result{res("spf", Pass)}},
	}, {
		name: "stray specials",
		in:   "mx.example; ) = ; spf=pass",
		want: Field{AuthServID: "mx.example", Results: []Result{res("spf", Pass)}},
		err:  true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseField(tc.in)
			if tc.err {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseFieldBounds(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("mx.example")
	for range 100 {
		b.WriteString("; dkim=pass header.d=example.com")
	}
	f, err := ParseField(b.String())
	assert.Error(t, err)
	assert.Len(t, f.Results, maxResults)
}
