package github

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	gh "github.com/google/go-github/v62/github"
)

// A page of the runners list is decoded here rather than by go-github,
// which spends most of a 10,000-runner cycle's CPU on it (reflection, a
// pointer per field, labels' ids and types we drop). go-github still builds
// the request, checks the answer (errors, rate limits) and reads the Link
// header; only the body's decoding is ours.
//
// The fast parser accepts the shape GitHub sends, exactly: keys as GitHub
// spells them, once each, values of the types go-github expects, strings
// without escapes. Anything else (an escape, a null, an unknown key that
// differs from a known one only in case, a duplicate, invalid JSON, a read
// error) sends the whole page through go-github's own decoding of the same
// bytes, so any page decodes to what go-github would have made of it and
// fails with the same error, but for an answer that is no page of runners
// at all (see errNotAPage), which fails the list.

// runnerPage decodes pages of the runners list, keeping what ListRunners
// returns of the runners whose name starts with prefix.
type runnerPage struct {
	prefix string
	body   bytes.Buffer
	// labels interns label names: a few names for many runners.
	labels map[string]string
	// last is the last runner's labels: most runners have the same.
	last []string
	// spare is a block the runners' label slices are cut from.
	spare []string

	data   []byte
	pos    int
	found  []Runner // this page's, until it is known to decode
	labelN [][]byte // the runner being read's label names
}

func newRunnerPage(prefix string) *runnerPage {
	return &runnerPage{prefix: prefix, labels: map[string]string{}}
}

// maxPageBody is more than any page of 100 runners; a longer body is left
// to go-github's decoding, which reads no further than its value.
const maxPageBody = 8 << 20

// read reads a page's body and appends its runners with the prefix to out.
func (p *runnerPage) read(body io.Reader, out []Runner) ([]Runner, error) {
	p.body.Reset()
	_, readErr := p.body.ReadFrom(io.LimitReader(body, maxPageBody))
	whole := readErr == nil && p.body.Len() < maxPageBody
	if whole && p.parse(p.body.Bytes()) {
		return append(out, p.found...), nil
	}
	// What go-github does with the body (Client.Do): decode one value,
	// an empty body being no error; from the same bytes, then the rest of
	// the body or the error that ended it.
	rest := body
	if readErr != nil || whole {
		rest = errReader{readErr}
	}
	page := &gh.Runners{}
	src := io.MultiReader(bytes.NewReader(p.body.Bytes()), rest)
	if err := json.NewDecoder(src).Decode(&page); err != nil && err != io.EOF {
		return out, err
	}
	if err := checkPage(page); err != nil {
		return out, err
	}
	for _, r := range page.Runners {
		if strings.HasPrefix(r.GetName(), p.prefix) {
			out = append(out, runnerFromAPI(r))
		}
	}
	return out, nil
}

// errNotAPage is a 200 answer that is no page of runners: an empty body,
// null, no "runners" list, or a null in it. go-github would read the first
// three as no runners at all (and panic on the others); a cycle must not
// take a proxy's empty answer for "this unit has no runners".
var errNotAPage = errors.New("GitHub's answer is not a page of runners")

func checkPage(page *gh.Runners) error {
	if page == nil || page.Runners == nil {
		return errNotAPage
	}
	if slices.Contains(page.Runners, nil) {
		return errNotAPage
	}
	return nil
}

// errReader ends the body as reading it ended: at EOF, or with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// notFast is what the fast parser panics with on what it does not accept;
// parse recovers it.
type notFast struct{}

func (p *runnerPage) fail() { panic(notFast{}) }

// parse reads a page into found, and tells whether the fast parser could.
func (p *runnerPage) parse(data []byte) (ok bool) {
	p.data, p.pos, p.found = data, 0, p.found[:0]
	defer func() {
		if r := recover(); r != nil {
			if _, mine := r.(notFast); !mine {
				panic(r)
			}
			ok = false
		}
	}()
	p.page()
	// What follows the value is go-github's to ignore too.
	return true
}

// page reads {"total_count": N, "runners": [...]}.
func (p *runnerPage) page() {
	p.expect('{')
	var seenRunners, seenTotal bool
	for more := !p.consume('}'); more; more = p.more('}') {
		switch key := p.key(); {
		case string(key) == "runners" && !seenRunners:
			seenRunners = true
			p.runners()
		case string(key) == "total_count" && !seenTotal:
			seenTotal = true
			p.integer()
		case foldsTo(key, "runners", "total_count"):
			p.fail()
		default:
			p.skip(0)
		}
	}
	if !seenRunners {
		p.fail() // go-github's decoding tells which error
	}
}

func (p *runnerPage) runners() {
	p.expect('[')
	for more := !p.consume(']'); more; more = p.more(']') {
		p.runner()
	}
}

// The keys of go-github's Runner and RunnerLabels, which it would fill
// from any spelling that folds to one of them.
var (
	runnerKeys = []string{"id", "name", "os", "status", "busy", "labels"}
	labelKeys  = []string{"id", "name", "type"}
)

func (p *runnerPage) runner() {
	p.expect('{')
	var r Runner
	var name, status []byte
	p.labelN = p.labelN[:0]
	var seen [6]bool
	for more := !p.consume('}'); more; more = p.more('}') {
		key := p.key()
		k := -1 // in runnerKeys
		switch string(key) {
		case "id":
			k = 0
			r.ID = p.integer()
		case "name":
			k = 1
			name = p.str()
		case "os":
			k = 2
			p.str()
		case "status":
			k = 3
			status = p.str()
		case "busy":
			k = 4
			r.Busy = p.boolean()
		case "labels":
			k = 5
			p.runnerLabels()
		default:
			if foldsTo(key, runnerKeys...) {
				p.fail()
			}
			p.skip(0)
		}
		if k >= 0 {
			if seen[k] {
				p.fail()
			}
			seen[k] = true
		}
	}
	if !bytes.HasPrefix(name, []byte(p.prefix)) {
		return
	}
	r.Name = string(name)
	switch string(status) {
	case string(RunnerOnline):
		r.Status = RunnerOnline
	case string(RunnerOffline):
		r.Status = RunnerOffline
	default:
		r.Status = RunnerStatus(status)
	}
	r.Labels = p.cutLabels()
	p.found = append(p.found, r)
}

func (p *runnerPage) runnerLabels() {
	p.expect('[')
	for more := !p.consume(']'); more; more = p.more(']') {
		p.expect('{')
		var name []byte
		var seen [3]bool
		for more := !p.consume('}'); more; more = p.more('}') {
			key := p.key()
			k := -1 // in labelKeys
			switch string(key) {
			case "id":
				k = 0
				p.integer()
			case "name":
				k = 1
				name = p.str()
			case "type":
				k = 2
				p.str()
			default:
				if foldsTo(key, labelKeys...) {
					p.fail()
				}
				p.skip(0)
			}
			if k >= 0 {
				if seen[k] {
					p.fail()
				}
				seen[k] = true
			}
		}
		p.labelN = append(p.labelN, name) // a label without a name is ""
	}
}

// cutLabels makes the runner's label slice, never nil, as runnerFromAPI
// does, of interned names.
func (p *runnerPage) cutLabels() []string {
	n := len(p.labelN)
	if p.spare == nil || len(p.spare) < n {
		p.spare = make([]string, max(n, 1024))
	}
	labels := p.spare[:0:n]
	p.spare = p.spare[n:]
	for i, b := range p.labelN {
		if i < len(p.last) && string(b) == p.last[i] {
			labels = append(labels, p.last[i])
			continue
		}
		l, ok := p.labels[string(b)]
		if !ok {
			l = string(b)
			p.labels[l] = l
		}
		labels = append(labels, l)
	}
	p.last = labels
	return labels
}

// The grammar: each reader fails on what it does not accept.

func (p *runnerPage) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// consume reads c if it comes next.
func (p *runnerPage) consume(c byte) bool {
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *runnerPage) expect(c byte) {
	if !p.consume(c) {
		p.fail()
	}
}

// more reads what follows a member of an object or array: a comma, and
// another member follows, or the closing bracket.
func (p *runnerPage) more(end byte) bool {
	p.ws()
	if p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ',':
			p.pos++
			return true
		case end:
			p.pos++
			return false
		}
	}
	p.fail()
	return false
}

// key reads an object key and its colon.
func (p *runnerPage) key() []byte {
	k := p.str()
	p.expect(':')
	return k
}

// str reads a string without escapes, of valid UTF-8 (what
// encoding/json would keep byte for byte); its bytes are data's.
func (p *runnerPage) str() []byte {
	p.expect('"')
	d, start := p.data, p.pos
	ascii := true
	for i := start; i < len(d); i++ {
		switch strClass[d[i]] {
		case plain:
		case quote:
			if !ascii && !utf8.Valid(d[start:i]) {
				p.fail()
			}
			p.pos = i + 1
			return d[start:i]
		case nonASCII:
			ascii = false
		default: // an escape, or a control character
			p.fail()
		}
	}
	p.fail()
	return nil
}

// What str makes of each byte.
const (
	plain = iota
	quote
	nonASCII
	unplain
)

var strClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c == '"':
			t[c] = quote
		case c == '\\' || c < ' ':
			t[c] = unplain
		case c >= utf8.RuneSelf:
			t[c] = nonASCII
		}
	}
	return t
}()

// integer reads a JSON integer that fits an int64, as encoding/json
// decodes one into an int64 or an int.
func (p *runnerPage) integer() int64 {
	p.ws()
	d, i := p.data, p.pos
	negative := i < len(d) && d[i] == '-'
	if negative {
		i++
	}
	start := i
	var n uint64
	for ; i < len(d) && '0' <= d[i] && d[i] <= '9'; i++ {
		if n > (1<<63)/10 {
			p.fail()
		}
		n = n*10 + uint64(d[i]-'0')
	}
	limit := uint64(1<<63 - 1)
	if negative {
		limit++
	}
	switch {
	case i == start, d[start] == '0' && i > start+1, n > limit:
		p.fail()
	case i < len(d) && (d[i] == '.' || d[i] == 'e' || d[i] == 'E'):
		p.fail()
	}
	p.pos = i
	if negative {
		return int64(-n)
	}
	return int64(n)
}

func (p *runnerPage) boolean() bool {
	p.ws()
	switch rest := p.data[p.pos:]; {
	case bytes.HasPrefix(rest, []byte("true")):
		p.pos += 4
		return true
	case bytes.HasPrefix(rest, []byte("false")):
		p.pos += 5
		return false
	}
	p.fail()
	return false
}

// skip reads any valid JSON value of a key we do not keep, depth deep in
// what it skips.
func (p *runnerPage) skip(depth int) {
	p.ws()
	if p.pos >= len(p.data) || depth > 64 {
		p.fail()
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		p.pos++
		for more := !p.consume('}'); more; more = p.more('}') {
			p.skipString()
			p.expect(':')
			p.skip(depth + 1)
		}
	case c == '[':
		p.pos++
		for more := !p.consume(']'); more; more = p.more(']') {
			p.skip(depth + 1)
		}
	case c == '"':
		p.skipString()
	case c == '-' || '0' <= c && c <= '9':
		p.skipNumber()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.data[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				return
			}
		}
		p.fail()
	}
}

// skipString reads any valid JSON string, escapes and all.
func (p *runnerPage) skipString() {
	p.expect('"')
	d := p.data
	for i := p.pos; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return
		case c < ' ':
			p.fail()
		case c == '\\':
			i++
			switch {
			case i >= len(d):
				p.fail()
			case d[i] == 'u':
				if i+4 >= len(d) || !isHex(d[i+1]) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) {
					p.fail()
				}
				i += 4
			case !strings.ContainsRune(`"\/bfnrt`, rune(d[i])):
				p.fail()
			}
		}
	}
	p.fail()
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// skipNumber reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *runnerPage) skipNumber() {
	d, i := p.data, p.pos
	digits := func() {
		start := i
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		if i == start {
			p.fail()
		}
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	if i < len(d) && d[i] == '0' {
		i++
	} else {
		digits()
	}
	if i < len(d) && d[i] == '.' {
		i++
		digits()
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		digits()
	}
	p.pos = i
}

// foldsTo tells whether encoding/json might match key to one of keys
// (it matches case-insensitively, with Unicode folding): then only it
// knows what the page means. Any key that is not ASCII may.
func foldsTo(key []byte, keys ...string) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	for _, k := range keys {
		if len(k) == len(key) && strings.EqualFold(string(key), k) {
			return true
		}
	}
	return false
}
