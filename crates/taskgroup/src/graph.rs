//! Dependency graphs over indices: cycle detection (reported as `a -> b -> a`) and reachability.
//! Iterative, so a session with thousands of groups cannot overflow the stack.

/// Every cycle a depth-first search meets, each as its nodes with the first repeated at the end.
/// Edges point from a node to what it depends on.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    let mut color = vec![Color::White; edges.len()];
    let mut found: Vec<Vec<usize>> = Vec::new();
    for root in 0..edges.len() {
        if color[root] != Color::White {
            continue;
        }
        // (node, next edge to follow); the stack is the current path.
        let mut stack = vec![(root, 0usize)];
        color[root] = Color::Gray;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match color[target] {
                    Color::White => {
                        color[target] = Color::Gray;
                        stack.push((target, 0));
                    }
                    Color::Gray => {
                        let start = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(n, _)| n).collect();
                        cycle.push(target);
                        found.push(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    found
}

/// Whether `to` is reachable from `from` by following edges (not counting `from` itself).
pub(crate) fn reaches(edges: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; edges.len()];
    let mut todo = edges[from].clone();
    while let Some(node) = todo.pop() {
        if node == to {
            return true;
        }
        if !std::mem::replace(&mut seen[node], true) {
            todo.extend_from_slice(&edges[node]);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_with_their_path() {
        // 0 -> 1 -> 2 -> 0, 3 -> 3, 4 -> 0
        let edges = vec![vec![1], vec![2], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&edges), vec![vec![0, 1, 2, 0], vec![3, 3]]);
    }

    #[test]
    fn acyclic_graphs_have_no_cycles_and_reach_transitively() {
        let edges = vec![vec![1, 2], vec![2], vec![]];
        assert!(cycles(&edges).is_empty());
        assert!(reaches(&edges, 0, 2));
        assert!(!reaches(&edges, 2, 0));
        assert!(!reaches(&edges, 0, 0));
    }
}
