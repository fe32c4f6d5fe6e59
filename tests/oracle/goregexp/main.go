// Command goregexp answers, for the operator's tests, what Go's own regexp package says
// about a pattern and some tags: the oracle the operator's RE2 layer is held to.
//
// One JSON object per input line, {"pattern": "...", "tags": ["...", ...], "template": "..."},
// answered by one JSON object per output line, in the same order:
//
//	{"ok": false, "error": "error parsing regexp: ..."}
//	{"ok": true, "names": ["", "name", ...], "matches": [null, [0, 3, -1, -1], ...],
//	 "expanded": ["", "3", ...]}
//
// names is Regexp.SubexpNames(); matches holds, per tag, FindStringSubmatchIndex (null when
// the pattern does not match), which is what MatchString, FindStringSubmatch and Expand
// read; expanded, per tag, the template expanded by Regexp.ExpandString over that match
// ("" when there is none), as Flux's filterTags extract does. The standard library only,
// so the answer is Go's and nothing else's.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
)

type question struct {
	Pattern  string   `json:"pattern"`
	Tags     []string `json:"tags"`
	Template string   `json:"template"`
}

type answer struct {
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	Names    []string `json:"names,omitempty"`
	Matches  [][]int  `json:"matches,omitempty"`
	Expanded []string `json:"expanded,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<16), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var q question
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Fprintln(os.Stderr, "goregexp: bad input line:", err)
			os.Exit(2)
		}
		if err := enc.Encode(ask(q)); err != nil {
			fmt.Fprintln(os.Stderr, "goregexp:", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "goregexp:", err)
		os.Exit(2)
	}
}

func ask(q question) answer {
	re, err := regexp.Compile(q.Pattern)
	if err != nil {
		return answer{Error: err.Error()}
	}
	matches := make([][]int, len(q.Tags))
	expanded := make([]string, len(q.Tags))
	for i, tag := range q.Tags {
		matches[i] = re.FindStringSubmatchIndex(tag)
		if matches[i] != nil {
			expanded[i] = string(re.ExpandString(nil, q.Template, tag, matches[i]))
		}
	}
	return answer{OK: true, Names: re.SubexpNames(), Matches: matches, Expanded: expanded}
}
