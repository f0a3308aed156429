// semver-judge CONSTRAINT TAG...: prints, one a line, the TAGs that Masterminds/semver v3
// (Debian's golang-github-masterminds-semver-dev, the library skopeo sync uses) accepts for
// CONSTRAINT, deciding as skopeo's images-by-semver filter does: semver.NewVersion(tag),
// skipped when it fails, then Constraints.Check. Exit 2 when CONSTRAINT does not parse.
package main

import (
	"fmt"
	"os"

	"github.com/Masterminds/semver"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: semver-judge CONSTRAINT TAG...")
		os.Exit(2)
	}
	c, err := semver.NewConstraint(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, t := range os.Args[2:] {
		v, err := semver.NewVersion(t)
		if err != nil {
			continue
		}
		if c.Check(v) {
			fmt.Println(t)
		}
	}
}
