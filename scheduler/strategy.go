package scheduler

import "fmt"

// Strategy chooses how feasible nodes are ranked.
type Strategy int

const (
	// Spread prefers the least allocated node: accounts of one busy tenant
	// land on different machines, and a node failure hurts fewer of them.
	Spread Strategy = iota
	// BinPack prefers the fullest node that still fits, keeping whole nodes
	// free for draining or for large plans.
	BinPack
)

// ParseStrategy reads a strategy name from server configuration: "spread" or
// "binpack" ("bin-pack" is accepted too, as the configuration docs spell it).
func ParseStrategy(s string) (Strategy, error) {
	switch s {
	case "spread":
		return Spread, nil
	case "binpack", "bin-pack":
		return BinPack, nil
	}
	return Spread, fmt.Errorf("unknown scheduler strategy %q (want \"spread\" or \"binpack\")", s)
}

func (s Strategy) String() string {
	switch s {
	case Spread:
		return "spread"
	case BinPack:
		return "binpack"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// MarshalText and UnmarshalText let a Strategy sit directly in configuration
// structs and flag.TextVar.
func (s Strategy) MarshalText() ([]byte, error) {
	if s != Spread && s != BinPack {
		return nil, fmt.Errorf("unknown scheduler strategy %d", int(s))
	}
	return []byte(s.String()), nil
}

func (s *Strategy) UnmarshalText(b []byte) error {
	v, err := ParseStrategy(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
