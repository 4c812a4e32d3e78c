//go:build race

package feed_test

// raceDetector is true under -race, which slows every goroutine about
// tenfold: load tests scale down rather than time out.
const raceDetector = true
