package charm

import (
	_ "github.com/prometheus/prometheus/promql/parser"
	_ "github.com/ulikunitz/xz"
)
