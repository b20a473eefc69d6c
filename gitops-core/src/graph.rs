//! The dependency graph: topological waves and cycle detection.
//!
//! Nodes are indices `0..n` into the caller's list of resources; an edge
//! `(dependency, dependent)` means the dependency is applied first. The
//! graph is stored in `petgraph`, which stays out of the public API.

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

/// A directed acyclic graph over `0..n` with its topological waves.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    graph: DiGraph<(), (), u32>,
    waves: Vec<Vec<usize>>,
    wave_of: Vec<u32>,
}

/// The graph has a cycle; the nodes are listed in dependency order and the
/// last one depends on the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle through {} nodes", cycle.len())]
pub struct CycleError {
    /// Node indices along the cycle: each depends on the next, the last on the first.
    pub cycle: Vec<usize>,
}

impl DependencyGraph {
    /// Builds the graph of `nodes` nodes from `(dependency, dependent)` edges and
    /// computes its waves (topological levels).
    ///
    /// # Panics
    /// Never on valid indices; an edge naming a node `>= nodes` is a caller bug
    /// and panics.
    pub fn new(
        nodes: usize,
        edges: impl IntoIterator<Item = (usize, usize)>,
    ) -> Result<Self, CycleError> {
        let edges = edges.into_iter();
        let mut graph = DiGraph::with_capacity(nodes, edges.size_hint().0);
        for _ in 0..nodes {
            graph.add_node(());
        }
        for (from, to) in edges {
            graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
        let mut this = Self {
            graph,
            waves: Vec::new(),
            wave_of: vec![u32::MAX; nodes],
        };
        this.compute_waves()?;
        Ok(this)
    }

    /// Kahn's algorithm, level by level; inside a wave nodes are in index order.
    fn compute_waves(&mut self) -> Result<(), CycleError> {
        let n = self.graph.node_count();
        let mut indegree: Vec<u32> = vec![0; n];
        for edge in self.graph.raw_edges() {
            indegree[edge.target().index()] += 1;
        }
        let mut current: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut placed = 0;
        while !current.is_empty() {
            let level = self.waves.len() as u32;
            let mut next = Vec::new();
            for &node in &current {
                self.wave_of[node] = level;
                for succ in self
                    .graph
                    .neighbors_directed(NodeIndex::new(node), Direction::Outgoing)
                {
                    let d = &mut indegree[succ.index()];
                    *d -= 1;
                    if *d == 0 {
                        next.push(succ.index());
                    }
                }
            }
            placed += current.len();
            next.sort_unstable();
            self.waves.push(std::mem::replace(&mut current, next));
        }
        if placed == n {
            return Ok(());
        }
        Err(CycleError {
            cycle: self.find_cycle(&indegree),
        })
    }

    /// Every node left with a non-zero indegree has a predecessor that is also
    /// left, so walking predecessors from any of them must revisit a node.
    fn find_cycle(&self, indegree: &[u32]) -> Vec<usize> {
        let n = indegree.len();
        let remaining = |i: usize| indegree[i] > 0;
        let Some(start) = (0..n).find(|&i| remaining(i)) else {
            return Vec::new();
        };
        let mut seen_at: Vec<Option<usize>> = vec![None; n];
        let mut walk = Vec::new();
        let mut node = start;
        loop {
            if let Some(pos) = seen_at[node] {
                // walk[pos..] is the cycle in "depends on" order.
                let mut cycle = walk.split_off(pos);
                let min = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, v)| **v)
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(min);
                return cycle;
            }
            seen_at[node] = Some(walk.len());
            walk.push(node);
            node = self
                .graph
                .neighbors_directed(NodeIndex::new(node), Direction::Incoming)
                .map(|p| p.index())
                .filter(|&p| remaining(p))
                .min()
                .unwrap_or(node);
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The waves: wave 0 has no dependencies; every edge goes to a later wave.
    pub fn waves(&self) -> &[Vec<usize>] {
        &self.waves
    }

    /// The wave a node is in.
    pub fn wave_of(&self, node: usize) -> usize {
        self.wave_of[node] as usize
    }

    /// Direct dependencies of `node`.
    pub fn dependencies(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(node), Direction::Incoming)
            .map(|n| n.index())
    }

    /// Direct dependents of `node`.
    pub fn dependents(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(node), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// Every node that depends on `node`, directly or not, in index order.
    pub fn transitive_dependents(&self, node: usize) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![node];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            for d in self.dependents(n) {
                if !seen[d] {
                    seen[d] = true;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_has_one_node_per_wave() {
        let g = DependencyGraph::new(3, [(0, 1), (1, 2)]).unwrap();
        assert_eq!(g.waves(), &[vec![0], vec![1], vec![2]]);
        assert_eq!(g.transitive_dependents(0), vec![1, 2]);
    }

    #[test]
    fn diamond() {
        let g = DependencyGraph::new(4, [(0, 1), (0, 2), (1, 3), (2, 3)]).unwrap();
        assert_eq!(g.waves(), &[vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn cycle_reported_in_order() {
        // 0 -> 1 -> 2 -> 0 as "dependency -> dependent"; 3 hangs off it.
        let err = DependencyGraph::new(4, [(0, 1), (1, 2), (2, 0), (2, 3)]).unwrap_err();
        // In "depends on" order: 0 depends on 2, 2 on 1, 1 on 0.
        assert_eq!(err.cycle, vec![0, 2, 1]);
        let err = DependencyGraph::new(2, [(1, 1)]).unwrap_err();
        assert_eq!(err.cycle, vec![1]);
    }
}
