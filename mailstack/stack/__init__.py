"""What a stack declares, validated: settings, domains, quotas, the mailbox roster, generated passwords."""
