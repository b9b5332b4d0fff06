package autoscale

import (
	"sort"
)

// Node selection.
//
// Activation (standby → active) repeats, one node at a time: take the zone
// with the fewest active nodes that is below its max and has a healthy
// standby node (ties: the zone whose best candidate scores lower, then the
// zone name), and in it the standby node with the lowest score. Draining
// repeats: take the zone with the most active nodes that is above its
// min (ties: the zone whose worst candidate scores higher), and in it a spot
// node first, then the highest score. The score is
//
//	cost_per_hour + carbon_price × power_watts/1000 × intensity(region)/1000
//
// i.e. money per hour with carbon priced per kg, so a cheaper node wins
// unless its extra emissions cost more than the saving.

// Score returns a node's hourly cost with its carbon priced in.
func (s Selection) Score(t NodeTags) float64 {
	return t.CostPerHour + s.CarbonPrice*s.KgPerHour(t)
}

// KgPerHour is a node's emissions in kg CO2e per hour while running.
func (s Selection) KgPerHour(t NodeTags) float64 {
	w := t.PowerWatts
	if w == 0 {
		w = s.DefaultPowerWatts
	}
	return w / 1000 * s.Intensity(t.CarbonRegion) / 1000
}

// Intensity is the carbon intensity of region in gCO2e/kWh.
func (s Selection) Intensity(region string) float64 {
	if v, ok := s.CarbonIntensity[region]; ok {
		return v
	}
	return s.DefaultCarbonIntensity
}

type zoneState struct {
	name     string
	active   int // healthy active nodes, after the choices made so far
	min, max int // max 0: none
	standby  []*NodeObservation
	drainees []*NodeObservation // active nodes that may be drained
}

// zoneTable builds per-zone state from the observation.
func zoneTable(spec Spec, nodes []NodeObservation) map[string]*zoneState {
	zs := map[string]*zoneState{}
	get := func(z string) *zoneState {
		if s, ok := zs[z]; ok {
			return s
		}
		l := spec.Limits.Zones[z]
		s := &zoneState{name: z, min: l.Min, max: l.Max}
		zs[z] = s
		return s
	}
	for _, z := range spec.zoneNames() {
		get(z)
	}
	for i := range nodes {
		n := &nodes[i]
		z := get(n.Zone)
		switch {
		case n.State == stateActive && n.Healthy:
			z.active++
			z.drainees = append(z.drainees, n)
		case n.State == stateStandby && n.Healthy:
			z.standby = append(z.standby, n)
		}
	}
	return zs
}

func sortedZones(zs map[string]*zoneState) []*zoneState {
	out := make([]*zoneState, 0, len(zs))
	for _, z := range zs {
		out = append(out, z)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// pickActivations chooses up to k standby nodes to activate; it returns
// them and the per-zone shortfall for the nodes it could not find (the
// zones a scale_out hook should provision in).
func pickActivations(sel Selection, zs map[string]*zoneState, k int, allowedZone func(string) bool) (picked []*NodeObservation, short map[string]int) {
	zones := sortedZones(zs)
	for _, z := range zones {
		sort.SliceStable(z.standby, func(i, j int) bool {
			a, b := z.standby[i], z.standby[j]
			sa, sb := sel.Score(a.Tags), sel.Score(b.Tags)
			if sa != sb {
				return sa < sb
			}
			return a.Name < b.Name
		})
	}
	for ; k > 0; k-- {
		var best *zoneState
		for _, z := range zones {
			if len(z.standby) == 0 || (z.max > 0 && z.active >= z.max) {
				continue
			}
			if best == nil || z.active < best.active ||
				(z.active == best.active && sel.Score(z.standby[0].Tags) < sel.Score(best.standby[0].Tags)) {
				best = z
			}
		}
		if best == nil {
			break
		}
		picked = append(picked, best.standby[0])
		best.standby = best.standby[1:]
		best.active++
	}
	// What is left is a shortfall: spread it over the zones that may grow,
	// fewest active first.
	for ; k > 0; k-- {
		var best *zoneState
		for _, z := range zones {
			if (z.max > 0 && z.active >= z.max) || !allowedZone(z.name) {
				continue
			}
			if best == nil || z.active < best.active {
				best = z
			}
		}
		if best == nil {
			break
		}
		if short == nil {
			short = map[string]int{}
		}
		short[best.name]++
		best.active++
	}
	return picked, short
}

// drainOrder sorts a zone's drain candidates: spot first, then the highest
// score, then the most recently activated, then by name.
func drainOrder(sel Selection, ns []*NodeObservation) {
	sort.SliceStable(ns, func(i, j int) bool {
		a, b := ns[i], ns[j]
		if a.Tags.Spot != b.Tags.Spot {
			return a.Tags.Spot
		}
		sa, sb := sel.Score(a.Tags), sel.Score(b.Tags)
		if sa != sb {
			return sa > sb
		}
		if !a.Since.Equal(b.Since) {
			return a.Since.After(b.Since)
		}
		return a.Name < b.Name
	})
}

// pickDrains chooses up to k active nodes to drain without taking any zone
// below its min.
func pickDrains(sel Selection, zs map[string]*zoneState, k int) []*NodeObservation {
	zones := sortedZones(zs)
	for _, z := range zones {
		drainOrder(sel, z.drainees)
	}
	var picked []*NodeObservation
	for ; k > 0; k-- {
		var best *zoneState
		for _, z := range zones {
			if len(z.drainees) == 0 || z.active <= z.min {
				continue
			}
			if best == nil || z.active > best.active ||
				(z.active == best.active && drainsBefore(sel, z.drainees[0], best.drainees[0])) {
				best = z
			}
		}
		if best == nil {
			break
		}
		picked = append(picked, best.drainees[0])
		best.drainees = best.drainees[1:]
		best.active--
	}
	return picked
}

func drainsBefore(sel Selection, a, b *NodeObservation) bool {
	if a.Tags.Spot != b.Tags.Spot {
		return a.Tags.Spot
	}
	return sel.Score(a.Tags) > sel.Score(b.Tags)
}

// pickOverMax returns, for each zone above its max, the nodes to drain to
// bring it down.
func pickOverMax(sel Selection, zs map[string]*zoneState) []*NodeObservation {
	var picked []*NodeObservation
	for _, z := range sortedZones(zs) {
		if z.max == 0 || z.active <= z.max {
			continue
		}
		drainOrder(sel, z.drainees)
		for z.active > z.max && len(z.drainees) > 0 {
			picked = append(picked, z.drainees[0])
			z.drainees = z.drainees[1:]
			z.active--
		}
	}
	return picked
}

// pickUnderMin returns standby nodes that bring zones up to their min, and
// the per-zone shortfall.
func pickUnderMin(sel Selection, zs map[string]*zoneState) (picked []*NodeObservation, short map[string]int) {
	for _, z := range sortedZones(zs) {
		if z.active >= z.min {
			continue
		}
		need := z.min - z.active
		one := map[string]*zoneState{z.name: z}
		p, s := pickActivations(sel, one, need, func(string) bool { return true })
		picked = append(picked, p...)
		for k, v := range s {
			if short == nil {
				short = map[string]int{}
			}
			short[k] += v
		}
	}
	return picked, short
}
