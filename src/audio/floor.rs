//! The talkback floor: one talker at a time. Pure: keyed by any session
//! key, no I/O.

/// Why the floor could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FloorError {
    /// Another session holds it.
    #[error("another viewer is talking")]
    Taken,
}

/// Who may talk now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor<K> {
    holder: Option<K>,
}

impl<K> Default for Floor<K> {
    fn default() -> Self {
        Self { holder: None }
    }
}

impl<K: PartialEq + Clone> Floor<K> {
    /// A free floor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the floor for `who`; taking it again is fine.
    pub fn take(&mut self, who: &K) -> Result<(), FloorError> {
        match &self.holder {
            Some(h) if h != who => Err(FloorError::Taken),
            _ => {
                self.holder = Some(who.clone());
                Ok(())
            }
        }
    }

    /// Gives the floor up if `who` holds it; true if it did.
    pub fn release(&mut self, who: &K) -> bool {
        if self.holder.as_ref() == Some(who) {
            self.holder = None;
            true
        } else {
            false
        }
    }

    /// Whether `who` may talk now.
    pub fn holds(&self, who: &K) -> bool {
        self.holder.as_ref() == Some(who)
    }

    /// The current talker.
    pub fn holder(&self) -> Option<&K> {
        self.holder.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_talker_at_a_time_until_released() {
        let mut f = Floor::new();
        assert_eq!(f.take(&1), Ok(()));
        assert_eq!(f.take(&1), Ok(()), "taking it twice is fine");
        assert_eq!(f.take(&2), Err(FloorError::Taken));
        assert!(f.holds(&1) && !f.holds(&2));
        assert!(!f.release(&2), "only the holder releases");
        assert!(f.release(&1));
        assert_eq!(f.holder(), None);
        assert_eq!(f.take(&2), Ok(()));
    }
}
