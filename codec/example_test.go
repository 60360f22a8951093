package codec_test

import (
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/codec"
)

type Order struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
}

func ExampleJSON() {
	c := codec.JSON[Order]()

	b, _ := c.Encode(Order{ID: 7, Item: "book"})
	fmt.Println(string(b))

	o, _ := c.Decode(b)
	fmt.Printf("%+v\n", o)

	_, err := c.Decode(nil)
	fmt.Println(err)

	// Output:
	// {"id":7,"item":"book"}
	// {ID:7 Item:book}
	// codec: json: decode into codec_test.Order: empty input
}

func ExampleInt64() {
	c := codec.Int64()

	b, _ := c.Encode(-1)
	fmt.Printf("% x\n", b)

	_, err := c.Decode([]byte{0, 0, 1})
	var de *codec.DecodeError
	fmt.Println(errors.As(err, &de), err)

	// Output:
	// ff ff ff ff ff ff ff ff
	// true codec: int64: want 8 bytes, got 3
}
