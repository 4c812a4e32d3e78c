package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"
)

func TestPlaygroundInBrowser(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	b.Do(t, "open the playground", chromedp.Navigate(p.URL+"/"), chromedp.WaitVisible(".graphiql-container"))
	b.Screenshot(t, "playground")
	noProblems(t, b)
}
