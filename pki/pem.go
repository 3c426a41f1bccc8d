package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

const (
	pemCertificate  = "CERTIFICATE"
	pemPrivateKey   = "PRIVATE KEY"    // PKCS#8
	pemECPrivateKey = "EC PRIVATE KEY" // SEC 1
	pemRSAKey       = "RSA PRIVATE KEY"
)

// EncodeCertsPEM encodes certificates as concatenated CERTIFICATE blocks, in
// order (leaf first for a chain).
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// pem.Encode only fails on invalid headers; we pass none.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses every CERTIFICATE block in data, in order. Anything
// else in data, other than whitespace between blocks, is an error: a private
// key pasted into a certificate file should not be silently skipped.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("parse certificates: unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parse certificates: trailing data that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no CERTIFICATE block found")
	}
	return certs, nil
}

// EncodeKeyPEM encodes a private key as a PKCS#8 PRIVATE KEY block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKeyPEM parses the first PEM block of data as a private key. PKCS#8 is
// what EncodeKeyPEM writes; SEC 1 and PKCS#1 are accepted too so that keys made
// by openssl or step can be imported.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECPrivateKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case pemRSAKey:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("parse private key: unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T cannot sign", key)
	}
	return signer, nil
}

// NormalizeKeyPair checks that keyPEM matches the leaf of chainPEM and
// re-encodes both, so that only CERTIFICATE blocks and one PKCS#8 key
// reach a daemon's files. Errors never quote the input.
func NormalizeKeyPair(chainPEM, keyPEM []byte) (chain, key []byte, err error) {
	pair, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	for _, der := range pair.Certificate {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, nil, fmt.Errorf("chain: %w", err)
		}
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		return nil, nil, errors.New("private key: unsupported type")
	}
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
