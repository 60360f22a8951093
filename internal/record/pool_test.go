package record

import "testing"

func TestPoolReusesOnlyFittingArrays(t *testing.T) {
	var p Pool
	big := p.Get(1000)
	big = append(big, Message{Key: []byte("k")})
	p.Put(big)
	// A few records must not get the big array: it would be held for them, uncounted.
	if small := p.Get(10); cap(small) > 4*16 {
		t.Fatalf("Get(10) handed out an array of %d", cap(small))
	}
	for range 3 { // sync.Pool may drop what it holds at any time; try a few rounds
		p.Put(make([]Message, 1, 1000))
		got := p.Get(900)
		if cap(got) < 900 {
			t.Fatalf("Get(900) returned capacity %d", cap(got))
		}
		if len(got) != 0 {
			t.Fatalf("Get returned %d messages, want an empty slice", len(got))
		}
	}
}

func TestPoolPutClearsMessages(t *testing.T) {
	var p Pool
	msgs := []Message{{Key: []byte("a"), Value: []byte("b")}}
	p.Put(msgs)
	if msgs[0].Key != nil || msgs[0].Value != nil {
		t.Fatal("Put left the message's key and value referenced")
	}
}
