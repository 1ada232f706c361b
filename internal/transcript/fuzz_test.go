package transcript

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// conversation is an authentication in one of the forms the redactor
// knows, carrying pw, as the clients in this module write it.
func conversation(pw string, form uint8) (Proto, []chunk, bool) {
	user := "probe@a.test"
	rawOK := !strings.ContainsAny(pw, "\r\n\x00")
	lit := fmt.Sprint(len(pw))
	// imapclient quotes an ASCII string without CR, LF or NUL; anything
	// else becomes a literal.
	quotedOK := rawOK
	for i := 0; i < len(pw); i++ {
		quotedOK = quotedOK && pw[i] < utf8.RuneSelf
	}
	switch form % 12 {
	case 0:
		return SMTP, []chunk{s("220 hi\r\n"), c("AUTH PLAIN " + b64("\x00"+user+"\x00"+pw) + "\r\n"), s("235 ok\r\n")}, true
	case 1:
		return SMTP, []chunk{c("AUTH LOGIN\r\n"), s("334 VXNlcm5hbWU6\r\n"), c(b64(user) + "\r\n"),
			s("334 UGFzc3dvcmQ6\r\n"), c(b64(pw) + "\r\n"), s("535 no\r\n")}, true
	case 2:
		return SMTP, []chunk{c("AUTH XOAUTH2\r\n"), s("334 \r\n"),
			c(b64("user="+user+"\x01auth=Bearer "+pw+"\x01\x01") + "\r\n"), s("334 e30=\r\n"), c("\r\n"), s("535 no\r\n")}, true
	case 3:
		return POP3, []chunk{s("+OK hi\r\n"), c("USER " + user + "\r\n"), s("+OK\r\n"), c("PASS " + pw + "\r\n"), s("-ERR no\r\n")}, rawOK
	case 4:
		return POP3, []chunk{c("APOP " + user + " " + pw + "\r\n"), s("-ERR no\r\n")}, rawOK
	case 5:
		return POP3, []chunk{c("AUTH PLAIN " + b64("\x00"+user+"\x00"+pw) + "\r\n"), s("+OK\r\n")}, true
	case 6:
		return POP3, []chunk{c("AUTH XOAUTH2\r\n"), s("+ \r\n"), c(b64("user="+user+"\x01auth=Bearer "+pw+"\x01\x01") + "\r\n"),
			s("-ERR no\r\n")}, true
	case 7:
		return IMAP, []chunk{d("* OK hi\r\n"), d(`T1 LOGIN "` + user + `" ` + quote(pw) + "\r\n"), d("T1 NO no\r\n")}, quotedOK
	case 8:
		return IMAP, []chunk{d("* OK hi\r\n"), d(`T1 LOGIN "` + user + `" {` + lit + "}\r\n"), d("+ Ready\r\n"), d(pw + "\r\n"),
			d("T1 NO no\r\n")}, true
	case 9:
		return IMAP, []chunk{d("T1 LOGIN {" + fmt.Sprint(len(user)) + "+}\r\n" + user + " {" + lit + "+}\r\n" + pw + "\r\n"),
			d("T1 OK yes\r\n")}, true
	case 10:
		return IMAP, []chunk{d("T1 AUTHENTICATE PLAIN " + b64("\x00"+user+"\x00"+pw) + "\r\n"), d("T1 OK yes\r\n")}, true
	default:
		return IMAP, []chunk{d("T1 AUTHENTICATE OAUTHBEARER\r\n"), d("+ \r\n"),
			d(b64("n,a="+user+",\x01auth=Bearer "+pw+"\x01\x01") + "\r\n"), d("+ e30=\r\n"), d("\r\n"), d("T1 NO no\r\n")}, true
	}
}

// FuzzRedaction feeds a password through every authentication form, cut
// into writes at fuzzed points, and fails if the password or its base64
// form is stored.
func FuzzRedaction(f *testing.F) {
	for i, pw := range passwords {
		f.Add(pw, uint8(i), uint8(3))
	}
	f.Add("{3}\r\nabc", uint8(8), uint8(1))
	f.Add("a b\"c\\d", uint8(7), uint8(0))
	f.Fuzz(func(t *testing.T, pw string, form, cut uint8) {
		proto, chunks, ok := conversation(pw, form)
		if !ok || len(pw) < 6 {
			return
		}
		// A password that also occurs in the conversation's own text is
		// not the redactor's to hide.
		var skeleton strings.Builder
		for _, ch := range chunks {
			skeleton.WriteString(strings.ReplaceAll(ch.data, pw, ""))
		}
		if strings.Contains(skeleton.String(), pw) || strings.Contains(skeleton.String(), b64(pw)) {
			return
		}
		// Re-cut the client's writes (the server's, for IMAP's inferred
		// stream, keep their shape: imapclient's writes are whole).
		var cutChunks []chunk
		for _, ch := range chunks {
			if ch.dir == 'D' || cut == 0 {
				cutChunks = append(cutChunks, ch)
				continue
			}
			cutChunks = append(cutChunks, splitEvery(ch.dir, ch.data, int(cut))...)
		}
		got := run(t, proto, cutChunks...)
		all := strings.Join(got, "\n")
		for _, secret := range []string{pw, b64(pw)} {
			if strings.Contains(all, secret) {
				t.Fatalf("%s form %d: %q stored:\n%s", proto, form%12, secret, all)
			}
		}
	})
}
