package produce

import (
	"errors"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTxnErrorNamesTransactionalID: a transactional error names the producer's
// transactional id, and a missing transactional-id ACL says which ACL is missing.
func TestTxnErrorNamesTransactionalID(t *testing.T) {
	// Never connects: nothing listens on port 1, and no call here needs a broker.
	p, err := New(Config{Brokers: "127.0.0.1:1", TransactionalID: "orders-3f9a"})
	require.NoError(t, err)
	defer p.Close(time.Second)

	err = p.classify("init transactions", kafka.NewError(kafka.ErrTransactionalIDAuthorizationFailed, "Transactional Id authorization failed", true))
	var te *TxnError
	require.True(t, errors.As(err, &te))
	assert.True(t, te.Unauthorized)
	assert.True(t, te.Fatal)
	assert.Equal(t, "orders-3f9a", te.TransactionalID)
	assert.Contains(t, err.Error(), `init transactions of transactional id "orders-3f9a" (fatal)`)
	assert.Contains(t, err.Error(), `needs WRITE and DESCRIBE on TransactionalId "orders-3f9a"`)

	err = p.classify("commit transaction", kafka.NewError(kafka.ErrTimedOut, "timed out", false))
	require.True(t, errors.As(err, &te))
	assert.False(t, te.Unauthorized)
	assert.NotContains(t, err.Error(), "needs WRITE")
	assert.Contains(t, err.Error(), `transactional id "orders-3f9a"`)

	// Errors made outside classify (no id known) read as before.
	assert.Equal(t, "produce: x (fatal): boom", (&TxnError{Op: "x", Err: errors.New("boom"), Fatal: true}).Error())
}
