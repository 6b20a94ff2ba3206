-- What `portcullis login` learned of the identity a uid is linked to (issue 20): the
-- provider's verified email and its group claims (a JSON array of strings), so a
-- requester's sessions carry them into policy (`who = { idp_groups = [...] }`),
-- records and exports. NULL for links made before this column existed.
ALTER TABLE identity_links ADD COLUMN email TEXT NULL;
ALTER TABLE identity_links ADD COLUMN idp_groups TEXT NULL;
