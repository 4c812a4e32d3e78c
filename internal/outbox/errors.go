package outbox

import (
	"errors"
	"fmt"
)

// maxErrors bounds the failures an error of Move or Sweep spells out.
const maxErrors = 10

// errorSet gathers a move's failures: Redis's (infra) and the companies'
// whose events the database refused, the first maxErrors of them.
type errorSet struct {
	infra, companies []error
	infraSeen        bool
	more             int
}

func (s *errorSet) add(list *[]error, err error) {
	if len(s.infra)+len(s.companies) < maxErrors {
		*list = append(*list, err)
		return
	}
	s.more++
}

func (s *errorSet) addInfra(err error) {
	s.infraSeen = true
	s.add(&s.infra, err)
}

func (s *errorSet) addCompany(err error) { s.add(&s.companies, err) }

func (s *errorSet) merge(o *errorSet) {
	for _, e := range o.infra {
		s.addInfra(e)
	}
	s.infraSeen = s.infraSeen || o.infraSeen
	for _, e := range o.companies {
		s.addCompany(e)
	}
	s.more += o.more
}

// infraErr is the Redis failures only, nil if none.
func (s *errorSet) infraErr() error {
	if !s.infraSeen {
		return nil
	}
	if len(s.infra) == 0 {
		return errors.New("redis failed (more failures than logged)")
	}
	return errors.Join(s.infra...)
}

// err is every failure, nil if none.
func (s *errorSet) err() error {
	all := append(append([]error{}, s.infra...), s.companies...)
	if s.more > 0 {
		all = append(all, fmt.Errorf("and %d more failures", s.more))
	}
	return errors.Join(all...)
}
