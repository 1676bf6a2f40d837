"""JMA 防災情報XML: the safe parser (`parser`), the project's code tables (`codes`) and nothing that touches the ORM."""
