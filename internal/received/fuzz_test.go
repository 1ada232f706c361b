package received

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse reads arbitrary header blocks and splits a delivery over
// whatever chain they give: no panic, and Split's sums hold.
func FuzzParse(f *testing.F) {
	samples, _ := filepath.Glob(filepath.Join("testdata", "*.eml"))
	for _, s := range samples {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Received: from a (b [1.2.3.4]) by c with ESMTPS id d for <e@f>; Mon, 14 Sep 2026 10:00:00 +0000\r\n\r\n"))
	f.Add([]byte("Received: ((((\\)\r\nReceived: ;;;\r\nReceived: from by with id for via\r\n"))
	f.Add([]byte("Received: x 2026-09-14T10:00:00.123456789Z\r\nReceived: Sep 14 10:00:00 2026 -0000 (c; d)\r\n"))

	sent := time.Date(2026, 9, 14, 10, 0, 0, 0, time.UTC)
	p := Probe{Sent: sent, Accepted: sent.Add(700 * time.Millisecond), Arrived: sent.Add(4 * time.Second),
		SenderDomains: []string{"google.com"}, ReceiverDomains: []string{"outlook.com"}}
	f.Fuzz(func(t *testing.T, header []byte) {
		hops, _ := Parse(header)
		if len(hops) > maxHops {
			t.Fatalf("%d hops", len(hops))
		}
		b, err := Split(hops, p)
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, b)
	})
}
